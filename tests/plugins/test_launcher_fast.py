"""The vmap launcher's templated jobs (hydra_plugins/hpjax_launcher/_fast.py) leave what Hydra's
own `run_job` leaves: the same files, byte for byte, and the same returns."""

import json
import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper

from helpers import multirun
from hydra_plugins.hpjax_launcher import _fast, _impl

# hpjax's random search, 24 jobs in one batch (more than PER_TRIAL_LINES: the templated path), one
# program: floats, a string with '/', a group choice, ints.
GRID = ["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random", "hydra.sweeper.n_trials=24",
        "hydra.sweeper.batch_size=24", "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
        "model.dropout=choice(0, 0.25)", "activation=choice(relu, tanh)",
        "train.early_stopping.monitor=choice(val/loss, val/accuracy)",
        "train.early_stopping.patience=choice(1, 5)", "data=iris", "train.epochs=1",
        "train.save_params=none"]
TIMING = ("compile_time_s", "train_time_s", "samples_per_s", "population", "epoch_time_s")


def _untimed(path: Path) -> dict:
    data = json.loads(path.read_text())
    for key in TIMING:
        data.pop(key, None)
        data.get("best", {}).pop(key, None)
    return data


def test_templated_jobs_leave_the_files_and_returns_of_hydras_run_job(tmp_path, monkeypatch):
    calls = []
    job = _fast.Templates.job
    monkeypatch.setattr(_fast.Templates, "job",
                        lambda self, *a: calls.append(job(self, *a)) or calls[-1])
    fast = [r for batch in multirun(GRID, tmp_path / "fast") for r in batch]
    assert len(calls) == 24  # every job took the templated path (none raised Ineligible)
    monkeypatch.setattr(_impl, "PER_TRIAL_LINES", 100)  # Hydra's run_job for every job
    slow = [r for batch in multirun(GRID, tmp_path / "slow") for r in batch]
    assert len(calls) == 24 and len(fast) == len(slow) == 24  # (not called again)
    for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
        a, b = tmp_path / "fast" / str(i), tmp_path / "slow" / str(i)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir()) == [
            ".hydra", "hpjax.log", "metrics.jsonl", "result.json"]  # (the task's name here)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            text = (a / ".hydra" / name).read_text().replace(str(tmp_path / "fast"),
                                                             str(tmp_path / "slow"))
            assert text == (b / ".hydra" / name).read_text(), (i, name)
        stamp = re.compile(r"^\[[^]]*\]", re.M)
        assert stamp.sub("", (a / "hpjax.log").read_text()) == stamp.sub(
            "", (b / "hpjax.log").read_text())
        assert "ok: val/" in (a / "hpjax.log").read_text()
        assert _untimed(a / "result.json") == _untimed(b / "result.json")
        rows = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and rows[0]["epoch"] == 1
        assert f.overrides == s.overrides and f.status == s.status
        assert f.return_value == s.return_value and f.cfg == s.cfg
        assert f.hydra_cfg.hydra.job.num == s.hydra_cfg.hydra.job.num == i
        assert f.hydra_cfg.hydra.runtime.output_dir == str(a)
    assert len({f.cfg.optimizer.lr for f in fast}) == 24


@pytest.mark.parametrize("value", [
    0.001, 1e-08, 1e17, 2.5e-05, -0.0, 3.0, float("inf"), -float("inf"), float("nan"), 0, -7,
    12345678901234, True, False, None, "relu", "5", "1e-3", "true", "yes", "null", "", "a=b",
    "optimizer.lr=0.0083131", "/tmp/sweep/12", "val/loss", "it's", "a: b", "#x", "- x", "a b",
    "${optimizer.lr}", "é", "activation=relu,data=iris,model.dropout=0.07,optimizer.lr=0.008"])
def test_a_value_is_written_as_omegaconfs_yaml_writes_it(value):
    want = yaml.dump({"key": value}, Dumper=get_omega_conf_dumper(), default_flow_style=False,
                     allow_unicode=True, sort_keys=False)
    assert want.startswith("key: ") and want.endswith("\n")
    assert "key: " + _fast.scalar_yaml(value) + "\n" == want


def test_a_long_or_multiline_string_takes_hydras_path():
    for value in ("x " * 40, "two\nlines"):
        with pytest.raises(_fast.Ineligible):
            _fast.scalar_yaml(value)


@pytest.mark.parametrize("line", [
    "optimizer.lr=0.0083131", "optimizer.lr=1e-3", "optimizer.lr=1.5E+3", "model.width=64",
    "train.seed=-3", "train.seed=0", "model.dropout=0.0", "activation=relu", "a.b=007",
    "a.b=1_000", "a.b=.5", "a.b=5.", "a.b=inf", "a.b=nan", "a.b=true", "a.b=null", "a.b='q'",
    "a.b=1e5"])
def test_overrides_are_parsed_as_hydra_parses_them(line):
    want = OverridesParser.create().parse_overrides([line])[0]
    got = _fast.Overrides(lambda key: key == "activation").parse(line)
    value = want.value()
    assert got.key == want.key_or_group and type(got.value) is type(value)
    if isinstance(value, float) and math.isnan(value):  # nan equals nothing, itself included
        assert math.isnan(got.value)
    else:
        assert got.value == value
    assert got.group == (got.key == "activation") and got.line == line


@pytest.mark.parametrize("line", ["+train.note=x", "~train.seed", "model.width=[16,32]",
                                  "hydra.verbose=true", "optimizer.lr=${model.dropout}",
                                  "optimizer.lr=0.1,0.2"])
def test_other_overrides_take_hydras_path(line):
    with pytest.raises(_fast.Ineligible):
        _fast.Overrides(lambda key: False).parse(line)


def _log_config(path, disable=False):
    return OmegaConf.create({
        "version": 1, "disable_existing_loggers": disable,
        "formatters": {"simple": {"format": "%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "simple",
                              "filename": str(path)}},
        "root": {"level": "INFO", "handlers": ["file"]}})


def test_logging_configs_are_put_back_without_dictconfig_while_nothing_else_changed_them(
        tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    loggers = [x for x in logging.Logger.manager.loggerDict.values()
               if isinstance(x, logging.Logger) and not x.disabled]
    states = _impl.LoggingStates()
    sweep, jobs = _log_config(tmp_path / "sweep.log"), _log_config(tmp_path / "job.log")
    try:
        states.apply("hydra", sweep, False)
        first = root.handlers[:]
        states.apply("jobs", jobs, False)
        job_handlers = root.handlers[:]
        root.handlers[0] = logging.FileHandler(tmp_path / "job 2.log")  # a job's own file
        states.apply("hydra", sweep, False)
        assert root.handlers == first  # put back: the same handler objects
        states.apply("jobs", jobs, False)
        assert root.handlers == job_handlers
        logging.getLogger("hpjax.test").info("a line")
        states.apply("hydra", sweep, False)
        assert (tmp_path / "job.log").read_text() == "a line\n"
        root.addHandler(logging.NullHandler())  # someone else's change: configured again
        states.apply("jobs", jobs, False)
        assert root.handlers != job_handlers and len(root.handlers) == 1
        states.apply("hydra", sweep, False)
        disabling = _log_config(tmp_path / "x.log", disable=True)
        states.apply("x", disabling, False)
        x = root.handlers[:]
        states.apply("hydra", sweep, False)
        states.apply("x", disabling, False)
        assert root.handlers != x  # a config that disables loggers is applied every time
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for x in loggers:  # disable_existing_loggers disabled them
            x.disabled = False
