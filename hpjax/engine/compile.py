"""Compile accounting and JAX's persistent compilation cache."""

import os
from typing import Any, Optional


class CompileStats:
    """Running totals of the programs built in this process (`count`: compiled by XLA or
    loaded from the persistent cache, which JAX times alike as its backend compile), how many
    of them were loaded (`cache_hits`), and the time spent building them. JAX reports each
    trace, lowering and compile through `jax.monitoring`; `install()` starts listening."""

    _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
               "/jax/core/compile/jaxpr_to_mlir_module_duration",
               "/jax/core/compile/backend_compile_duration")
    count = 0
    seconds = 0.0
    cache_hits = 0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        import jax

        jax.monitoring.register_event_duration_secs_listener(cls._listen)
        jax.monitoring.register_event_listener(cls._count_hit)
        cls._installed = True

    @classmethod
    def _listen(cls, event: str, duration: float, **_: Any) -> None:
        if event in cls._EVENTS:
            cls.seconds += duration
            cls.count += event == cls._EVENTS[-1]

    @classmethod
    def _count_hit(cls, event: str, **_: Any) -> None:
        cls.cache_hits += event == "/jax/compilation_cache/cache_hits"


# XLA's CPU backend optimises the code it generates at LLVM's level 3 by default. Level 1 gives
# the same numbers bit for bit (without fast math, LLVM's further passes do not change float
# arithmetic; tests/engine/test_compile.py compares the two) in less compile time, most of all for
# the init program, whose random draws (threefry, once per parameter) run once.
CPU_OPTIMIZATION_LEVEL = 1


def compiler_options() -> Optional[dict]:
    """The XLA options hpjax's programs compile with: on CPU, backend optimisation level 1
    (`CPU_OPTIMIZATION_LEVEL`); None (XLA's own) on other platforms, and where the level is set
    already: `JAX_DISABLE_MOST_OPTIMIZATIONS` (level 0) or `XLA_FLAGS`."""
    import jax

    set_already = jax.config.values.get("jax_disable_most_optimizations") or (
        "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""))
    if set_already or jax.default_backend() != "cpu":
        return None
    return {"xla_backend_optimization_level": CPU_OPTIMIZATION_LEVEL}


DEFAULT_CACHE = "~/.cache/hpjax/jax"


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
    """Turns on JAX's persistent compilation cache, so a new process reuses compiled programs.

    Args:
      path: the cache folder; default `$HPJAX_COMPILATION_CACHE`, else `~/.cache/hpjax/jax`.
        `off` (or `0`, empty) leaves the cache off.
    Returns:
      The folder in use, or None when off.
    """
    import jax

    path = path if path is not None else os.environ.get("HPJAX_COMPILATION_CACHE", DEFAULT_CACHE)
    if path.strip().lower() in ("", "0", "off", "false", "none"):
        return None
    path = os.path.abspath(os.path.expanduser(path))
    jax.config.update("jax_compilation_cache_dir", path)
    # Tiny programs are cheaper to compile than to look up, unless JAX's own setting says
    # otherwise (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`).
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the OS has one (Linux, a SLURM
    job's share), else every core (macOS, Windows)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def use_cpu_cores(environ: Optional[dict] = None) -> int:
    """Gives JAX one CPU device per usable core (`HPJAX_CPU_DEVICES=auto`, the default), or
    `HPJAX_CPU_DEVICES=N` devices; `1` keeps JAX's single one. XLA runs a small model's matrix
    products on one thread, so the population engine splits a population's members over the
    devices, one slice per core. Takes effect only before JAX's backend starts (`hpjax.main()`
    calls it first; so does training in a process where JAX has not started, such as a
    submitit job). It sets `jax_num_cpu_devices`, not `XLA_FLAGS`, so a child process counts
    its own cores; an `XLA_FLAGS` that already sets the device count is left alone.

    Returns:
      The device count set (0: none set).
    """
    environ = os.environ if environ is None else environ
    if "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", ""):
        return 0
    wanted = environ.get("HPJAX_CPU_DEVICES", "auto").strip().lower()
    count = usable_cores() if wanted == "auto" else int(wanted)
    if count <= 1:
        return 0
    import jax

    if jax.config.jax_num_cpu_devices == count:
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started: it keeps its devices
        return 0
    return count
