import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Tests count compilations in this process: JAX's persistent cache (hpjax turns it on) would hide
# them. The processes the tests start (`hpjax`, its SLURM and submitit jobs) count nothing and
# share one cache for the whole run instead, so each compiles a program once, not once per test
# (`child_env()`; tests of the cache itself set their own folder).
os.environ["HPJAX_COMPILATION_CACHE"] = "off"
# One JAX device (a user gets one per core by default): tests compare numbers across runs;
# the population split over devices has a test of its own.
os.environ["HPJAX_CPU_DEVICES"] = "1"
# Compiles about 1.5x faster on CPU (here and in every process the tests start: `hpjax`, SLURM
# and submitit jobs); tests compare runs made under the same setting.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
# Sweeps end without report.html (5 MB and 1-2 s each); tests/test_html_report.py turns it on.
os.environ["HPJAX_REPORT_HTML"] = "off"

import jax  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.version import _UNSPECIFIED_, VersionBase

from hpjax.cli import CONF_DIR, register
from hpjax.config import to_config

jax.config.update("jax_numpy_rank_promotion", "raise")
CHILD_CACHE = os.path.join(tempfile.gettempdir(), "hpjax-tests-jax-cache-"
                           + os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))
register()

# Small runs for tests: the default config minus most epochs.
FAST = ["train.epochs=5", "train.early_stopping.patience=null"]


def sgd_configs(lrs, extra=()):
    """Configs of a small population: SGD at each learning rate, 4 epochs, no early stopping."""
    return [compose_config(["optimizer=sgd", f"optimizer.lr={lr}", "train.epochs=4",
                            "train.early_stopping.patience=null", *extra]) for lr in lrs]


def compose_config(overrides=(), validate=True, return_hydra_config=False):
    """The config `hpjax <overrides>` would run, composed in-process."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides),
                      return_hydra_config=return_hydra_config)
    return to_config(cfg) if validate else cfg


@pytest.fixture
def unset_version_base():
    """Hydra's own test suites expect the defaults of an unset version_base (jobs chdir to their
    directory); composing hpjax's config in this process set it to 1.3."""
    state = VersionBase.instance()
    saved, state.version_base = state.version_base, _UNSPECIFIED_
    yield
    state.version_base = saved


@pytest.fixture
def make_cfg():
    return compose_config


def child_env(env=None):
    """The environment of a process a test starts: this one's, with the run's shared compilation
    cache, and `env` on top."""
    return {**os.environ, "HPJAX_COMPILATION_CACHE": CHILD_CACHE, **(env or {})}


@pytest.fixture
def jobs_share_the_cache(monkeypatch):
    """For a driver in this process whose jobs are processes of their own (submitit, SLURM):
    they inherit its environment, so they get the run's shared compilation cache. The driver
    itself trains nothing, so nothing here turns the cache on in this process."""
    monkeypatch.setenv("HPJAX_COMPILATION_CACHE", CHILD_CACHE)


def run_cli(args, cwd, module=False, env=None):
    """Runs `hpjax <args>` (or `python -m hpjax`) in a fresh process; returns CompletedProcess."""
    script = str(Path(sys.executable).parent / "hpjax")
    exe = [sys.executable, "-m", "hpjax"] if module else [script]
    return subprocess.run(exe + list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=child_env(env))


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(args, tmp_path, **kw)
