"""The `hpjax` command as users run it: help, --cfg, single runs, grids, errors, exit codes.

Its entry point runs in this process (`hpjax_main`, helpers.run_main) where the process boundary
is not what a test checks; `python -m hpjax` and the persistent compilation cache start processes.
"""

import json
import re

import pytest
from omegaconf import OmegaConf

from helpers import run_main


def test_help_lists_groups_and_their_choices(hpjax_main, tmp_path):
    import gc

    older = gc.get_threshold()
    gc.set_threshold(700, *older[1:])  # Python's default
    try:
        out = hpjax_main("--help")
        # the command collects young objects every GC_THRESHOLD new ones, not every 700
        assert gc.get_threshold() == (10_000, *older[1:])
    finally:
        gc.set_threshold(*older)
    assert out.returncode == 0
    assert "optimizer: adagrad, adam, adamw, lamb, lion, momentum, nesterov, rmsprop, sgd\n" \
        in out.stdout
    assert ("activation: elu, gelu, leaky_relu, relu, sigmoid, silu, softplus, swish, tanh\n"
            in out.stdout)
    assert "schedule: constant, cosine, exponential, onecycle, step, warmup_cosine\n" in out.stdout
    assert ("data: array_record, breast_cancer, csv, diabetes, digits, iris, make_regression, "
            "mnist1d, npy, npz, synthetic, wine\n") in out.stdout
    assert "model: cnn, cnn1d, mlp\n" in out.stdout
    assert "task: binary, classification, regression\n" in out.stdout
    assert "base_" not in out.stdout
    # python -m hpjax: the same command, named by its path
    module = run_main(["--help"], tmp_path, module=True)
    assert module.returncode == 0
    assert re.sub(r"python \S+__main__\.py", "hpjax", module.stdout) == out.stdout


def test_cfg_job_prints_the_composed_config_with_overrides(hpjax_main):
    out = hpjax_main("--cfg", "job", "optimizer=adamw", "optimizer.lr=3e-4", "activation=tanh",
              "model.width=[32,16]")
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.optimizer == {"name": "adamw", "lr": 3e-4, "weight_decay": 1e-4,
                             "clip_norm": None, "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert cfg.activation.name == "tanh" and list(cfg.model.width) == [32, 16]
    assert "hydra" not in cfg


def test_single_run_writes_metrics_and_result(hpjax_main, tmp_path):
    # SGD: the programs of the diverging run below (its learning rate a traced value)
    out = hpjax_main("optimizer=sgd", "train.epochs=3", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "ok" and result["epochs_run"] == 3
    assert result["objective"] == rows[result["best_epoch"] - 1]["val/accuracy"]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").train.epochs == 3
    assert f"results in {run}" in out.stdout


def test_bare_multirun_runs_the_default_grid_one_job_directory_per_combination(hpjax_main,
                                                                              tmp_path):
    """`hpjax -m` with no sweep of its own runs conf/search/default.yaml's grid, 3 learning
    rates x 3 activations: one job directory per combination, each trained. (An explicit
    grid's values on the command line: test_a_diverging_run_...)"""
    out = hpjax_main("-m", "train.epochs=2", "hydra.sweep.dir=sweep")
    assert out.returncode == 0, out.stderr
    sweep = tmp_path / "sweep"
    jobs = sorted((p.name for p in sweep.iterdir() if p.is_dir()), key=int)
    assert jobs == [str(i) for i in range(9)]
    overrides = [list(OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml")) for job in jobs]
    assert overrides[0] == ["optimizer.lr=0.001", "activation=relu", "train.epochs=2"]
    assert overrides[8] == ["optimizer.lr=0.01", "activation=gelu", "train.epochs=2"]
    seen = set()
    for job in jobs:
        cfg = OmegaConf.load(sweep / job / ".hydra" / "config.yaml")
        seen.add((cfg.optimizer.lr, cfg.activation.name))
        result = json.loads((sweep / job / "result.json").read_text())
        assert result["status"] == "ok" and 0.2 < result["objective"] <= 1.0, job
    assert seen == {(lr, a) for lr in (1e-3, 3e-3, 1e-2) for a in ("relu", "tanh", "gelu")}
    assert "9 trials, ranked by val/accuracy" in out.stdout


BAD_INPUTS = [
    (["optimizer.lr=-1"], "hpjax: error: optimizer.lr=-1.0: must be a finite number > 0"),
    (["model.dropout=1.5"], "hpjax: error: model.dropout=1.5: must be in [0, 1)"),
    (["train.batch_size=5000"], "hpjax: error: train.batch_size=5000: must be an integer "
                                "between 1 and the training-set size 1257"),
    (["data=csv", "data.path=nope.csv"], "hpjax: error: data.path='nope.csv': file not found"),
    (["data=csv", "data.path=d.csv", "data.label_column=y"],
     "hpjax: error: data.label_column='y': must be one of the columns of d.csv: a, b, label"),
]


@pytest.mark.parametrize("args,line", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(hpjax_main, tmp_path, args,
                                                                line):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,x\n3,4,y\n")
    out = hpjax_main(*args, "hydra.run.dir=run")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # failed before training


def test_hydra_rejects_unknown_keys_itself(hpjax_main):
    out = hpjax_main("optimizer.lrr=1")
    assert out.returncode == 1 and "Key 'lrr' not in 'AdamConfig'" in out.stderr


def test_a_diverging_run_exits_zero_and_a_sweep_goes_on_past_a_failed_trial(hpjax_main,
                                                                             tmp_path):
    """A diverged trial is a result (exit 0); a sweep whose trial failed with an error trains
    the others and exits 3 (docs/faults.md), naming the error."""
    out = hpjax_main("optimizer=sgd", "optimizer.lr=1e6", "train.epochs=3", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"
    out = hpjax_main("-m", "optimizer=sgd", "optimizer.lr=0.1,1e6,-1", "activation=relu",
                     "train.epochs=3", "hydra.sweep.dir=sweep")
    assert out.returncode == 3, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "hpjax: 1 of 3 trials failed: optimizer.lr=-1.0: must be a finite number > 0 (1 trial); "
        "exit code 3")
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2"]  # one job directory per value of the command line's grid
    assert [OmegaConf.load(tmp_path / "sweep" / j / ".hydra" / "config.yaml").optimizer.lr
            for j in jobs] == [0.1, 1e6, -1]
    results = [json.loads((tmp_path / "sweep" / j / "result.json").read_text()) for j in jobs]
    assert [r["status"] for r in results] == ["ok", "diverged", "failed"]
    assert results[2]["error"] == "optimizer.lr=-1.0: must be a finite number > 0"
    assert "1 trial failed: optimizer.lr=-1.0: must be a finite number > 0 (trial 2)" in out.stdout


def test_persistent_compilation_cache_is_reused_by_a_new_process(cli, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    # a folder of its own, and hpjax's own floor for what is cached (the suite's 0 removed)
    env = {"HPJAX_COMPILATION_CACHE": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": None}
    first = cli("train.epochs=2", "hydra.run.dir=a", env=env)
    second = cli("train.epochs=2", "hydra.run.dir=b", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "0 from the persistent cache" in first.stdout
    hits = int(re.search(r"(\d+) from the persistent cache", second.stdout).group(1))
    assert hits >= 1  # the epoch program at least (programs under 0.2 s are not cached)
    assert any(cache.iterdir())
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("a", "b"))
    assert a["objective"] == b["objective"]
    # off: JAX's cache stays off (checked in this process: a third `hpjax` cost 7 s of CPU)
    import jax

    from hpjax.engine.compile import enable_compilation_cache

    before = jax.config.jax_compilation_cache_dir
    for off in ("off", "0", "", "None"):
        monkeypatch.setenv("HPJAX_COMPILATION_CACHE", off)
        assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
