"""The process: JAX's CPU devices, set by an explicit call and not by importing hpjax."""

import contextlib
import logging
import subprocess
import sys

import pytest

# One process whose JAX backend never starts (JAX's device count is fixed once it does) imports
# hpjax under HPJAX_CPU_DEVICES=auto, then forks a process per case: each starts JAX anew under
# that case's environment (a process of its own, without paying the imports again).
PROBE = """import json, os, sys

import hpjax, hpjax.config, hpjax.engine.jobs, hpjax.engine.batch, jax
from hydra.core.config_store import ConfigStore

print("probe:", json.dumps("base_config" in ConfigStore.instance().repo), flush=True)
for env, call, run in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(env)
            if run:
                os.chdir(run[0])
                r = hpjax.train(run[1:])
                print("probe:", json.dumps([r.status, sorted(
                    m for m in ("sklearn", "plotly") if m in sys.modules)]), flush=True)
            else:
                if call:
                    hpjax.use_cpu_cores()
                print("probe:", json.dumps([len(jax.devices()),
                                  "xla_force" in os.environ.get("XLA_FLAGS", "")]), flush=True)
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0, (env, call, run)
"""
DEVICES = {"unset": {}, "auto": {"HPJAX_CPU_DEVICES": "auto"}, "1": {"HPJAX_CPU_DEVICES": "1"},
           "3": {"HPJAX_CPU_DEVICES": "3"},
           "3, XLA_FLAGS 2": {"HPJAX_CPU_DEVICES": "3",
                              "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}}


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """What the probe's processes printed: whether importing hpjax registered its configs;
    each of DEVICES' (device count, XLA_FLAGS forcing it) after `hpjax.use_cpu_cores()`; the
    device count under HPJAX_CPU_DEVICES=auto with no call; and a run on a CSV file of its own
    (`test_a_run_imports_only_what_its_config_uses`): its status and which of scikit-learn and
    Plotly it imported."""
    import json
    import os

    import numpy as np

    from helpers import child_env

    tmp = tmp_path_factory.mktemp("probe")
    x = np.random.default_rng(0).normal(size=(90, 3))
    path = tmp / "data.csv"
    path.write_text("a,b,c,label\n" + "".join(f"{a},{b},{c},{int(a + b > 0)}\n"
                                             for a, b, c in x))
    base = {k: v for k, v in os.environ.items() if k not in ("HPJAX_CPU_DEVICES", "XLA_FLAGS")}
    cases = [({**base, **env}, True, None) for env in DEVICES.values()]
    cases.append(({**base, "HPJAX_CPU_DEVICES": "auto"}, False, None))
    cases.append((child_env(), False, [str(tmp), "data=csv", f"data.path={path}",
                                       "train.epochs=1", "model.width=8", "data.cv_folds=3",
                                       "train.batch_size=16"]))
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True,
                         text=True, env={**base, "HPJAX_CPU_DEVICES": "auto"}, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line.removeprefix("probe:")) for line in out.stdout.splitlines()
             if line.startswith("probe:")]
    registered, *devices, unused, run = lines
    return {"registered": registered, "devices": dict(zip(DEVICES, devices, strict=True)),
            "no call": unused, "run": run}


@pytest.mark.xdist_group("probe")  # one worker: one probe process
def test_use_cpu_cores_gives_jax_one_device_per_core_unless_told_otherwise(probe):
    import os

    cores = len(os.sched_getaffinity(0))
    # Child processes are not told: the device count is JAX's config, not XLA_FLAGS.
    assert probe["devices"] == {"unset": [cores, False], "auto": [cores, False],
                                "1": [1, False], "3": [3, False], "3, XLA_FLAGS 2": [2, True]}


@pytest.mark.xdist_group("probe")  # one worker: one probe process
def test_importing_hpjax_changes_no_global_state(probe):
    """Imported under HPJAX_CPU_DEVICES=auto, hpjax leaves JAX its one device and Hydra's
    ConfigStore empty until `use_cpu_cores()` and `register()` are called."""
    assert probe["no call"] == [1, False] and probe["registered"] is False


@contextlib.contextmanager
def programs_compiled():
    """The names of the programs XLA compiles in the block (`jit(_epoch)`...), in order, with
    their count by `CompileStats` appended last."""
    import jax

    from hpjax.engine.compile import CompileStats

    CompileStats.install()
    compiled = []
    jax.config.update("jax_log_compiles", True)
    handler = logging.Handler()
    handler.emit = lambda r: compiled.append(r.getMessage().split()[1]) if r.getMessage(
        ).startswith("Compiling ") else None
    logging.getLogger("jax").addHandler(handler)
    before = CompileStats.count
    try:
        yield compiled
    finally:
        logging.getLogger("jax").removeHandler(handler)
        jax.config.update("jax_log_compiles", False)
    compiled.append(CompileStats.count - before)


def test_a_batch_loads_its_data_once_and_compiles_each_program_once(tmp_path, monkeypatch):
    """Two trials trained as a population: the data set is loaded, split and standardised once
    (planning the population's memory and training share it), and the programs compiled are the
    population's init, its epoch (which keeps the best variables too) and its evaluation (one
    for the validation and test splits); no data transfer compiles a program."""
    from conftest import compose_config

    from hpjax import data as data_lib
    from hpjax.engine.batch import Job, train_jobs

    loads = []
    load = data_lib._load
    monkeypatch.setattr(data_lib, "_CACHE", {})
    monkeypatch.setattr(data_lib, "_load", lambda *a: loads.append(a) or load(*a))
    # a width no other test uses: this signature's programs are compiled here
    cfgs = [compose_config(["data=iris", "train.epochs=2", "model.width=24", "train.seed=3",
                            f"optimizer.lr={lr}", "train.save_params=none"])
            for lr in (0.01, 0.02)]
    with programs_compiled() as compiled:
        ends = train_jobs([Job(c, str(tmp_path / str(i))) for i, c in enumerate(cfgs)])
    assert [e.outcome.result.status for e in ends] == ["ok", "ok"]
    assert len(loads) == 1
    assert sorted(compiled[:-1]) == ["jit(_epoch)", "jit(_evaluate)", "jit(_init)"]
    assert compiled[-1] == 3


# Recorded on main d463b6e (before the splits were padded to one evaluation and the epoch kept
# the best variables), under the tests' settings (one device, most optimizations off): the
# same numbers now, each to 1e-6. Digits' best epoch is its last, which the test evaluation
# picks from the current variables; diabetes' is epoch 3 of 6, kept by the epoch program.
SINGLE_RUNS = {
    "default": (["train.epochs=3"], 3, {
        "val/accuracy": 0.8296296000480652, "val/loss": 0.8208588361740112,
        "test/accuracy": 0.8444444537162781, "test/loss": 0.8002111315727234}),
    "regression": (["task=regression", "data=diabetes", "train.epochs=6", "optimizer.lr=0.1"],
                   3, {"val/loss": 0.5722616910934448, "val/mae": 47.91166305541992,
                       "val/mse": 3597.489990234375, "val/r2": 0.3911052942276001,
                       "test/loss": 0.38666489720344543, "test/mae": 40.048587799072266,
                       "test/mse": 2430.74658203125, "test/r2": 0.3744996190071106}),
}


@pytest.mark.parametrize("name", SINGLE_RUNS)
def test_a_single_run_compiles_its_init_epoch_and_evaluation_once(name, monkeypatch):
    """A single run compiles three programs: its init, its epoch (which keeps the best epoch's
    variables too) and its evaluation (the validation and test splits padded to one length,
    their metrics over their own samples as before)."""
    import hpjax
    from hpjax.engine import population

    overrides, best_epoch, metrics = SINGLE_RUNS[name]
    monkeypatch.setattr(population, "_CACHE", {})  # compiled here, whatever ran before
    with programs_compiled() as compiled:
        result = hpjax.train(overrides)
    assert sorted(compiled[:-1]) == ["jit(_epoch)", "jit(_evaluate)", "jit(_init)"]
    assert compiled[-1] == 3
    assert result.best_epoch == best_epoch
    got = {**result.best, **result.test}
    assert {k: got[k] for k in metrics} == pytest.approx(metrics, rel=1e-6, abs=1e-6)


@pytest.mark.xdist_group("probe")  # one worker: one probe process
def test_a_run_imports_only_what_its_config_uses(probe):
    """A run on data of its own (a CSV file), in a process of its own, imports neither
    scikit-learn (its data sets and metrics only: hpjax splits in NumPy) nor Plotly (the report
    only)."""
    assert probe["run"] == ["ok", []]


def test_programs_compiled_at_cpu_level_1_give_level_3s_numbers_bit_for_bit():
    """hpjax compiles its CPU programs at XLA's backend optimisation level 1 (quicker to compile
    than XLA's default, 3): a member's init and an epoch (dropout, Adam, a cosine schedule) give
    the same parameters and metrics bit for bit. (The tests' processes compile
    at level 0, JAX_DISABLE_MOST_OPTIMIZATIONS: hpjax leaves that setting alone; and without
    XLA's CPU fusion emitters, which these two programs turn back on as a user has them.)"""
    import functools

    import jax
    import numpy as np
    from conftest import compose_config

    from hpjax import data as data_lib
    from hpjax.engine import compile as compile_lib
    from hpjax.engine import population

    assert compile_lib.compiler_options() is None  # the tests' level 0 stays
    cfgs = [compose_config(["data=iris", "model.width=16", "model.num_layers=1",
                            "model.dropout=0.2"])]
    ds = data_lib.load(cfgs[0].data)
    spec = population.get(cfgs[0], ds).spec
    place = population.Placement.of(1)
    i = population.stack(cfgs, [0], place)
    x, y = place.shared((ds.x_train, ds.y_train))
    ones, zeros = place.per_member(np.ones(1, bool)), place.per_member(np.zeros(1, bool))
    runs = []
    for level in (compile_lib.CPU_OPTIMIZATION_LEVEL, 3):
        jit = functools.partial(jax.jit, compiler_options={
            "xla_backend_optimization_level": level, "xla_llvm_disable_expensive_passes": False,
            "xla_cpu_use_fusion_emitters": True})
        states = jit(functools.partial(population._init, spec))(i.hp, i.seeds, i.owner)
        best = population.copy(states.params)
        epoch = jit(functools.partial(population._epoch, spec, False), donate_argnums=(0, 1))
        states, best, m = epoch(states, best, zeros, i.hp, ones, i.fold, x, y, i.seeds, i.owner)
        runs.append(jax.device_get((states.params, m)))
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_program_loaded_from_the_persistent_cache_counts_as_one_built():
    """The suite runs with one persistent cache for the run (conftest): a test that counts
    compilations must still see a second program when it is loaded rather than compiled."""
    import jax
    import jax.numpy as jnp

    from hpjax.engine.compile import CompileStats

    CompileStats.install()
    assert jax.config.jax_compilation_cache_dir  # the run's cache (tests/conftest.py)

    def program():  # a new function each time: JAX's in-memory caches miss, its disk cache hits
        return jax.jit(lambda x: jnp.sin(x) * 3.25 + 0.125)  # (a program no other test builds)

    x = jnp.arange(7.0)
    count, hits = CompileStats.count, CompileStats.cache_hits
    program()(x).block_until_ready()  # compiled, or loaded if another process built it
    program()(x).block_until_ready()  # the same program again: loaded
    assert CompileStats.count - count == 2
    assert CompileStats.cache_hits - hits >= 1
