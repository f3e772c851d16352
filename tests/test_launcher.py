"""The vmap launcher: one program per static signature, each trial as if run alone."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from hydra import initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from conftest import compose_config
from hpjax import engine, train
from hpjax.config import ACTIVATIONS
from hydra_plugins.hpjax_launcher._impl import Group, Job, VmapLauncherImpl


def test_discovery():
    assert "VmapLauncher" in [c.__name__ for c in Plugins.instance().discover(Launcher)]


@pytest.mark.usefixtures("unset_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [("vmap", [])])
class TestVmapLauncher(LauncherTestSuite):
    """Hydra's suite, with its own task functions: the launcher runs them one by one."""


@pytest.mark.usefixtures("unset_version_base")
@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, ["-m", "hydra/launcher=vmap"])])
class TestVmapLauncherIntegration(IntegrationTestSuite):
    pass


GRID = ["optimizer.lr=1e-3,3e-3,1e-2,3e-2", "model.dropout=0,0.3", "train.seed=0,1",
        "activation=relu", "train.epochs=5", "train.early_stopping.patience=3"]


def test_vmap_and_basic_launchers_give_the_same_trials(cli, tmp_path):
    for launcher in ("basic", "vmap"):
        out = cli("-m", f"hydra/launcher={launcher}", *GRID, f"hydra.sweep.dir={launcher}")
        assert out.returncode == 0, out.stderr
    assert "Launching 16 jobs as 1 population" in out.stdout + out.stderr
    for i in range(16):
        a, b = (json.loads((tmp_path / d / str(i) / "result.json").read_text())
                for d in ("basic", "vmap"))
        assert (a["launcher"], b["launcher"]) == ("basic", "vmap")
        assert a["status"] == b["status"] == "ok"
        assert a["epochs_run"] == b["epochs_run"]
        rows = [[json.loads(line) for line in (tmp_path / d / str(i) / "metrics.jsonl").open()]
                for d in ("basic", "vmap")]
        # Measured: batched and single matrix products round differently (1e-7). At lr <= 1e-2
        # that stays: losses differ by at most 6.5e-6 (1e-5 is the bound), accuracies and best
        # epochs not at all. Adam at lr=3e-2 amplifies it: in one trial of the four (dropout 0.3,
        # seed 1) the difference grew from 1e-7 after epoch 1 to 2e-2 in val/loss by epoch 4,
        # its val/accuracy moved by one sample, and its best epoch (the first of the best
        # accuracy) from 2 to 5 in one run. Those trials are held to what a sweep sees: the same
        # status, the objective within two validation samples.
        tight = i < 12  # the grid's trials with lr <= 1e-2
        for ra, rb in zip(*rows, strict=True):
            assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-6)
            if tight:
                for key in ("train/loss", "val/loss"):
                    assert ra[key] == pytest.approx(rb[key], abs=1e-5)
                # An accuracy may move by one validation sample (1/270) on a tie of logits.
                assert abs(ra["val/accuracy"] - rb["val/accuracy"]) <= 1 / 270 + 1e-7
        if tight:
            assert a["best_epoch"] == b["best_epoch"]
            assert a["test"] == pytest.approx(b["test"], abs=1 / 270 + 1e-5)
        else:  # the best epoch may move to another of (nearly) the same val/accuracy
            assert a["objective"] == pytest.approx(b["objective"], abs=2 / 270 + 1e-7)


def population(values, extra=()):
    return [compose_config(["optimizer=sgd", f"optimizer.lr={lr}", "train.epochs=4",
                            "train.early_stopping.patience=null", *extra]) for lr in values]


def test_a_diverging_member_does_not_touch_the_others():
    with_nan = engine.train_population(population([0.1, 0.05, 1e6]), launcher="vmap")
    without = engine.train_population(population([0.1, 0.05, 0.02]), launcher="vmap")
    assert [o.result.status for o in with_nan] == ["ok", "ok", "diverged"]
    assert with_nan[2].result.diverged_epoch == 1 and len(with_nan[2].rows) == 1
    for i in (0, 1):  # same program (population padded to 4), so bit for bit equal
        assert with_nan[i].rows == [{**r, "epoch_time_s": a["epoch_time_s"]}
                                    for r, a in zip(without[i].rows, with_nan[i].rows,
                                                    strict=True)]
        assert with_nan[i].result.test == without[i].result.test


def test_early_stopping_freezes_one_member_and_keeps_its_best_epoch():
    cfgs = population([0.1, 0.1], extra=["train.epochs=6"])
    cfgs[1] = compose_config(["optimizer=sgd", "optimizer.lr=0.1", "train.epochs=6",
                              "train.early_stopping.patience=1",
                              "train.early_stopping.min_delta=10"])
    stopped, full = engine.train_population(cfgs, launcher="vmap")
    assert stopped.result.stopped_early is False and full.result.stopped_early is True
    assert full.result.epochs_run == 2 and full.result.best_epoch == 1
    assert stopped.result.epochs_run == 6
    # member 1's first epoch equals member 0's: both ran the same config until member 1 froze
    assert full.rows[0]["val/loss"] == stopped.rows[0]["val/loss"]


def test_new_numeric_values_with_the_same_signature_compile_nothing():
    engine.train_population(population([0.1, 0.05, 0.02, 0.01]), launcher="vmap")
    before = train.CompileStats.count
    outcomes = engine.train_population(
        population([0.3, 0.2], extra=["model.dropout=0.2", "train.seed=5", "activation=tanh"]),
        launcher="vmap")
    # 2 members pad to 2, not 4: one new program; a second batch of 2 then compiles nothing
    first = train.CompileStats.count
    engine.train_population(population([0.03, 0.04], extra=["model.dropout=0.4",
                                                             "activation=tanh"]),
                            launcher="vmap")
    assert train.CompileStats.count == first > before
    assert all(o.result.status == "ok" for o in outcomes)


def test_out_of_memory_splits_the_chunk_and_loses_nothing():
    sizes = []

    def tight_memory(cfgs, **kw):
        sizes.append(len(cfgs))
        if len(cfgs) > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return engine.train_trials(cfgs, **kw)

    impl = VmapLauncherImpl(max_population=8, memory_budget_mb=None)
    impl.train = tight_memory
    jobs = [Job(i, [], None, cfg=c) for i, c in enumerate(population([0.1, 0.05, 0.02, 0.01, 0.3]))]
    impl._train_chunk(jobs)
    assert sizes == [5, 2, 3, 1, 2]
    assert all(j.outcome.result.status == "ok" for j in jobs)
    assert len({j.outcome.result.objective for j in jobs}) > 1  # each job got its own member


def test_mixed_batch_runs_as_one_population_per_signature(cli, tmp_path):
    out = cli("-m", "model.width=16,32", "optimizer=adam,sgd", "optimizer.lr=0.01",
              "activation=relu,tanh", "train.epochs=2", "hydra.launcher.max_population=1",
              "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    assert "Launching 8 jobs as 4 populations (hydra/launcher=vmap)" in log
    assert log.count("in 2 chunks of at most 1") == 4
    results = [json.loads((tmp_path / "sweep" / str(i) / "result.json").read_text())
               for i in range(8)]
    assert [r["status"] for r in results] == ["ok"] * 8
    assert len({r["num_params"] for r in results}) == 2


def test_memory_estimate_caps_the_chunk():
    impl = VmapLauncherImpl(max_population=64, memory_budget_mb=64)
    group = Group([Job(0, [], None, cfg=compose_config(["model.width=1024"]))])
    size = impl._chunk_size(group)
    # 64x1024 + 1024x1024 + 1024x10 + biases = 1,125,386 parameters: ~42 MiB per member
    assert 1 <= size < 4
    assert VmapLauncherImpl(max_population=64, memory_budget_mb=4096)._chunk_size(group) == 64


def test_mixed_activations_share_one_program_and_a_shared_one_is_fixed_in_it():
    mixed = population([0.1, 0.1], extra=["train.epochs=2"])
    mixed[1] = compose_config(["optimizer=sgd", "optimizer.lr=0.1", "train.epochs=2",
                               "train.early_stopping.patience=null", "activation=tanh"])
    both = engine.train_population(mixed, launcher="vmap")
    tanh_only = engine.train_population([mixed[1]] * engine.FIXED_ACTIVATION_FROM,
                                        launcher="vmap")
    fixed = [key[-1] for key in engine._POPULATIONS]
    assert None in fixed and ACTIVATIONS.index("tanh") in fixed
    # the traced switch and the fixed activation compute the same numbers
    assert both[1].rows[-1]["val/loss"] == pytest.approx(tanh_only[0].rows[-1]["val/loss"],
                                                         abs=1e-6)
    assert both[0].rows[-1]["val/loss"] != both[1].rows[-1]["val/loss"]


def test_repeats_train_seeds_side_by_side_and_report_their_mean(tmp_path):
    cfgs = population([0.1, 0.03], extra=["train.repeats=3", "train.seed=4"])
    trials = engine.train_trials(cfgs, launcher="vmap")
    for trial in trials:
        r = trial.result
        assert r.members["seed"] == [4, 5, 6] and r.members["status"] == ["ok"] * 3
        assert r.objective == pytest.approx(np.mean(r.members["objective"]))
        assert r.objective_std == pytest.approx(np.std(r.members["objective"]))
        assert r.test["test/accuracy"] == pytest.approx(np.mean(r.members["test/accuracy"]))
        assert [row["members"] for row in trial.rows] == [3] * 4
    assert len(set(trials[0].result.members["objective"])) > 1  # the seeds differ
    # seed 4 of the first trial is the same training as a lone seed-4 run, to float rounding
    lone = engine.train_population([cfgs[0]], launcher="vmap")[0].result
    assert trials[0].result.members["objective"][0] == pytest.approx(lone.objective, abs=1 / 270)
    result = engine.run(compose_config(["train.repeats=2", "train.epochs=2"]), str(tmp_path))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["seed"] == [0, 1] and saved["objective"] == result.objective


def test_a_crashing_population_fails_its_jobs_not_the_sweep():
    def crash(cfgs, **kw):
        raise ValueError("boom")

    impl = VmapLauncherImpl(max_population=8, memory_budget_mb=None)
    impl.train = crash
    jobs = [Job(i, [], None, cfg=c) for i, c in enumerate(population([0.1, 0.05]))]
    impl._train_chunk(jobs)
    assert [repr(j.crash) for j in jobs] == ["ValueError('boom')"] * 2
    assert all(j.outcome is None for j in jobs)


def test_cv_folds_train_side_by_side_and_report_their_mean(tmp_path):
    cfgs = population([0.1, 0.03], extra=["data.cv_folds=3", "train.repeats=2"])
    trials = engine.train_trials(cfgs, launcher="vmap")
    for trial in trials:
        m = trial.result.members
        assert m["fold"] == [0, 1, 2, 0, 1, 2] and m["seed"] == [0, 0, 0, 1, 1, 1]
        assert trial.result.objective == pytest.approx(np.mean(m["objective"]))
        assert trial.result.objective_std == pytest.approx(np.std(m["objective"]))
        assert len(set(m["objective"])) > 1  # the folds differ
    # fold 2 of seed 0 inside the population is the same training as a lone fold-2 member
    lone = engine.train_population([cfgs[0]], folds=[2], launcher="vmap")[0].result
    assert lone.fold == 2
    inside = trials[0].result.members["objective"][2]
    assert inside == pytest.approx(lone.objective, abs=1 / 508)  # one validation sample
    result = engine.run(compose_config(["data.cv_folds=2", "train.epochs=2"]), str(tmp_path))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["members"]["fold"] == [0, 1] and saved["objective"] == result.objective
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["members"] for r in rows] == [2, 2]


def test_progress_reports_each_epoch_live_or_as_log_lines(caplog):
    from io import StringIO

    from rich.console import Console

    from hpjax.progress import SweepProgress

    buf = StringIO()
    progress = SweepProgress(Console(file=buf, force_terminal=True, width=160), live=True)
    reports = []
    with progress.running():
        update = progress.population("population 1/1: 3 trials", 4, ["trial 7", "trial 8", "t9"])
        outcomes = engine.train_population(population([0.1, 0.05, 1e6]), launcher="vmap",
                                           on_progress=lambda r: (reports.append(r), update(r)))
    assert [(r.epoch, r.running, r.members) for r in reports] == [(e, 2, 3) for e in range(1, 5)]
    best = max((0, 1), key=lambda i: outcomes[i].result.objective)  # the diverged one never
    assert (reports[-1].best, reports[-1].best_member) == (outcomes[best].result.objective, best)
    text = buf.getvalue()
    assert "population 1/1: 3 trials" in text and "epoch   4/4" in text and "2/3 running" in text
    assert f"best val/accuracy {reports[-1].best:.4f} (trial {7 + best})" in text
    # without a terminal: one log line per epoch, the same numbers
    plain = SweepProgress(Console(file=StringIO()))
    assert not plain.live
    with caplog.at_level(logging.INFO, logger="hpjax"), plain.running():
        for r in reports:
            plain.population("population 1/1", 4, ["trial 7", "trial 8", "t9"])(r)
    assert caplog.messages[-1] == (f"epoch   4/4  2/3 members running  best val/accuracy "
                                   f"{reports[-1].best:.4f} (trial {7 + best})")


@pytest.mark.parametrize("overrides", [
    ["optimizer.lr=0.01", "activation=relu"],
    ["optimizer=momentum", "optimizer.lr=0.02", "optimizer.momentum=0.5", "activation=tanh"],
    ["optimizer.lr=0.03", "optimizer=sgd", "data=iris", "model.width=[16,32]"],
    ["+train.note=x", "objective.metric='val/loss'", "train.seed=3", "search=tpe"],
    ["model.dropout=0.25", "train.early_stopping.patience=null", "schedule=step"],
])
def test_fast_sweep_configs_equal_hydras_own(overrides, tmp_path):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hpjax.cli import CONF_DIR
    from hydra_plugins.hpjax_launcher._compose import FastSweepConfigs

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [f"hydra.sweep.dir={tmp_path}"],
                                           run_mode=RunMode.MULTIRUN)
        fast = FastSweepConfigs(loader, loader.load_sweep_config)
        fast(master, [*overrides, "train.epochs=2"])  # the template comes from another job
        for ov in (overrides, overrides[::-1]):
            want = OmegaConf.to_container(loader.load_sweep_config(master, ov), resolve=False)
            got = OmegaConf.to_container(fast(master, ov), resolve=False)
            assert got == want
        assert len(fast._templates) <= 2
        with pytest.raises(ConfigCompositionException) as slow_error:
            loader.load_sweep_config(master, [*overrides, "optimizer.lrr=1"])
        with pytest.raises(ConfigCompositionException) as fast_error:
            fast(master, [*overrides, "optimizer.lrr=1"])
        assert str(fast_error.value) == str(slow_error.value)


def test_use_cpu_cores_gives_jax_one_device_per_core_unless_told_otherwise():
    import os

    cores = len(os.sched_getaffinity(0))
    probe = ("import os, hpjax.app, jax; "
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


def test_a_population_splits_over_the_most_devices_that_take_equal_slices():
    assert [engine.split_devices(size, devices) for size, devices in
            ((32, 12), (32, 2), (4, 16), (1, 2), (6, 4), (7, 2))] == [8, 2, 4, 1, 3, 1]


def test_a_population_split_over_two_devices_gives_the_same_trials(cli, tmp_path):
    grid = ["-m", "optimizer.lr=0.001,0.003", "model.dropout=0,0.3", "activation=relu",
            "train.epochs=3", "train.early_stopping.patience=null"]
    one = cli(*grid, "hydra.sweep.dir=one", env={"HPJAX_CPU_DEVICES": "1"})
    two = cli(*grid, "hydra.sweep.dir=two", env={"HPJAX_CPU_DEVICES": "2"})
    assert one.returncode == two.returncode == 0, two.stderr
    assert "population of 4 split over 2 devices" in two.stdout + two.stderr
    assert "split over" not in one.stdout + one.stderr
    for i in range(4):
        a, b = (json.loads((tmp_path / d / str(i) / "result.json").read_text())
                for d in ("one", "two"))
        # Measured on a 32-trial sweep: equal objectives, best val/loss within 6.2e-5 (the
        # split program fuses differently, and training carries the rounding on).
        assert a["status"] == b["status"] == "ok"
        assert a["objective"] == pytest.approx(b["objective"], abs=1 / 270 + 1e-7)
        assert a["best"]["val/loss"] == pytest.approx(b["best"]["val/loss"], abs=1e-3)
