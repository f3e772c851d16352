"""The process: JAX's CPU devices, set by an explicit call and not by importing hpjax."""

import logging
import subprocess
import sys


def test_use_cpu_cores_gives_jax_one_device_per_core_unless_told_otherwise():
    import os

    cores = len(os.sched_getaffinity(0))
    probe = ("import os, hpjax, jax; hpjax.use_cpu_cores(); "
             "print(len(jax.devices()), 'xla_force' in os.environ.get('XLA_FLAGS', ''))")
    for env, devices, flag in (({}, cores, False), ({"HPJAX_CPU_DEVICES": "auto"}, cores, False),
                               ({"HPJAX_CPU_DEVICES": "1"}, 1, False),
                               ({"HPJAX_CPU_DEVICES": "3"}, 3, False),
                               ({"HPJAX_CPU_DEVICES": "3", "XLA_FLAGS":
                                 "--xla_force_host_platform_device_count=2"}, 2, True)):
        base = {k: v for k, v in os.environ.items()
                if k not in ("HPJAX_CPU_DEVICES", "XLA_FLAGS")}
        out = subprocess.run([sys.executable, "-c", probe], env={**base, **env},
                             capture_output=True, text=True, check=True)
        # Child processes are not told: the device count is JAX's config, not XLA_FLAGS.
        assert out.stdout.split() == [str(devices), str(flag)], (env, out.stderr)


def test_importing_hpjax_changes_no_global_state():
    probe = ("import hpjax, hpjax.config, hpjax.engine.jobs, hpjax.engine.batch, jax, sys; "
             "from hydra.core.config_store import ConfigStore; "
             "print(len(jax.devices()), 'base_config' in ConfigStore.instance().repo)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"HPJAX_CPU_DEVICES": "auto", "PATH": ""})
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_a_batch_loads_its_data_once_and_compiles_each_program_once(tmp_path, monkeypatch):
    """Two trials trained as a population: the data set is loaded, split and standardised once
    (planning the population's memory and training share it), and the programs compiled are the
    population's init, its epoch, its evaluation (once for validation, once more for the test
    split's own shape) and the best parameters' update; no data transfer compiles a program."""
    import jax
    from conftest import compose_config

    from hpjax import data as data_lib
    from hpjax.engine.batch import Job, train_jobs
    from hpjax.engine.compile import CompileStats

    loads = []
    load = data_lib._load
    monkeypatch.setattr(data_lib, "_CACHE", {})
    monkeypatch.setattr(data_lib, "_load", lambda *a: loads.append(a) or load(*a))
    # a width no other test uses: this signature's programs are compiled here
    cfgs = [compose_config(["data=iris", "train.epochs=2", "model.width=24", "train.seed=3",
                            f"optimizer.lr={lr}", "train.save_params=none"])
            for lr in (0.01, 0.02)]
    CompileStats.install()
    compiled = []
    jax.config.update("jax_log_compiles", True)
    handler = logging.Handler()
    handler.emit = lambda r: compiled.append(r.getMessage().split()[1]) if r.getMessage(
        ).startswith("Compiling ") else None
    logging.getLogger("jax").addHandler(handler)
    try:
        before = CompileStats.count
        ends = train_jobs([Job(c, str(tmp_path / str(i))) for i, c in enumerate(cfgs)])
    finally:
        logging.getLogger("jax").removeHandler(handler)
        jax.config.update("jax_log_compiles", False)
    assert [e.outcome.result.status for e in ends] == ["ok", "ok"]
    assert len(loads) == 1
    assert sorted(compiled) == ["jit(_epoch)", "jit(_evaluate)", "jit(_evaluate)", "jit(_init)",
                                "jit(where)"]
    assert CompileStats.count - before == 5
