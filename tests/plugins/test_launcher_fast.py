"""The vmap launcher's templated jobs (hydra_plugins/hpjax_launcher/_fast.py): values written as
OmegaConf writes them, overrides parsed as Hydra parses them, and what takes Hydra's path. That a
sweep's templated jobs leave what Hydra's own `run_job` leaves, byte for byte:
tests/plugins/test_conformance.py."""

import logging
import math

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper

from hydra_plugins.hpjax_launcher import _fast, _impl


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
