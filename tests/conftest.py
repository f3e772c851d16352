import contextlib
import os
import tempfile

# One JAX compilation cache for the whole run, in a folder made fresh for it (nothing carried over
# from an earlier run): this process, the other pytest workers and every process the tests start
# (`hpjax`, its SLURM and submitit jobs) build each program once and load it after, whichever
# test or process needs it next. Tests that count compilations still see a second program:
# `CompileStats.count` counts programs loaded from the cache as it counts those compiled
# (tests/engine/test_compile.py). Tests of the cache itself set their own folder.
RUN_CACHE = os.path.join(tempfile.gettempdir(), "hpjax-tests-jax-cache-"
                         + os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))
os.environ["HPJAX_COMPILATION_CACHE"] = RUN_CACHE
# Every program cached, however quick to compile (hpjax's own floor is 0.2 s): a program loads
# faster than it compiles, and these runs build the same small programs again and again.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# One JAX device (a user gets one per core by default): tests compare numbers across runs;
# the population split over devices has a test of its own.
os.environ["HPJAX_CPU_DEVICES"] = "1"
# Compiles about 1.5x faster on CPU (here and in every process the tests start: `hpjax`, SLURM
# and submitit jobs); tests compare runs made under the same setting.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
# XLA's CPU fusion emitters (MLIR) compile a program in about 1.5x the time of its older LLVM
# emitters; the programs run slower (about 1.5x an epoch), which the tests' few tiny epochs do
# not notice. Every process the tests start inherits it, so runs compared with each other
# compile alike.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS"),
                                                     "--xla_cpu_use_fusion_emitters=false")))
# Sweeps end without report.html (5 MB and 1-2 s each); tests/test_html_report.py turns it on.
os.environ["HPJAX_REPORT_HTML"] = "off"

# Importing submitit configures logging (`logging.config.dictConfig`), which closes the handlers
# already installed: absl's (JAX's and Orbax's) closes its stream when that is not the current
# sys.stderr, as a test's captured stream of an earlier phase is, and pytest then loses its
# own stderr. Imported before absl installs its handler, it closes nothing.
with contextlib.suppress(ImportError):
    import submitit  # noqa: E402, F401

import gc  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from hydra.version import _UNSPECIFIED_, VersionBase  # noqa: E402

from helpers import (  # noqa: E402
    compose_config,
    postgres_down,
    require,
    run_cli,
    run_main,
    slurm_down,
)
from hpjax.app import collect_less  # noqa: E402
from hpjax.cli import register  # noqa: E402
from hpjax.engine.compile import enable_compilation_cache  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# The `hpjax` command's collection threshold (hpjax.app.main) in the pytest workers too: they
# compose and run thousands of configs, and their heap is large (JAX, Hydra, Optuna)
collect_less()
enable_compilation_cache()  # before anything compiles: JAX opens its cache once
register()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (`CI` set: .ci/run exports it), a skipped test fails: CI installs every extra and
    starts every service, so a skip there means something did not run that should have. A
    developer's machine without SLURM or Chromium still skips those tests."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which runs everything: {reason}"


def pytest_collection_finish(session):
    """What collecting imported (JAX, Flax, Hydra, every test module) stays for the whole run:
    out of the collector's way (`gc.freeze`), so that no later collection walks it again."""
    gc.collect()
    gc.freeze()


def pytest_collectreport(report):
    """The same for a module skipped as a whole."""
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"


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


@pytest.fixture
def jobs_share_the_cache(monkeypatch):
    """For a driver in this process whose jobs are processes of their own (submitit, SLURM):
    they inherit its environment, and with it the run's compilation cache, whatever an earlier
    test left in the variable."""
    monkeypatch.setenv("HPJAX_COMPILATION_CACHE", RUN_CACHE)


@pytest.fixture
def slurm():
    """The local SLURM cluster (scripts/local_cluster.sh), up: a test without it skips, or
    fails under CI."""
    require(slurm_down(), "the SLURM cluster")


@pytest.fixture
def postgres():
    """PostgreSQL at helpers.PG_URL, up: a test without it skips, or fails under CI."""
    require(postgres_down(), "PostgreSQL")


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(args, tmp_path, **kw)


@pytest.fixture
def hpjax_main(tmp_path):
    """`hpjax <args>` in this process, in tmp_path (`helpers.run_main`)."""
    return lambda *args: run_main(args, tmp_path)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` sends the tests of an `xdist_group` to one worker: xdist (3.8) says so
    by appending `@<group>` to their node ids, in a field pytest 9.2 no longer reads
    (pytest-dev/pytest-xdist#1386), so that no test was grouped and the SLURM tests ran on two
    workers at once. Here the ids get their suffix as xdist means them to, wherever it did not."""
    if not getattr(config.option, "loadgroup", False):  # (set on the workers)
        return
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(item.nodeid + suffix)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`, the SLURM group handed out first: its tests mostly wait for the
    one-node cluster, one after another (about 3 minutes), so one worker starts them while the
    others take the rest; the suite runs one worker more than the cores (`-n 3`) so that those
    waits leave no core idle."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SlurmFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node):
            if "slurm" in self.workqueue:
                self.workqueue.move_to_end("slurm", last=False)
            super()._assign_work_unit(node)

    return SlurmFirst(config, log)


@pytest.fixture
def breaks_on_seed_7(monkeypatch):
    """A population's program that fails for one trial's value (one that passes the schema:
    seed 7 stands for it): test_faults and test_exit_codes."""
    from hpjax.engine import batch

    train_trials = batch.train_jobs.__kwdefaults__["train"]

    def train(cfgs, **kw):
        if any(c.train.seed == 7 for c in cfgs):
            raise FloatingPointError("the program broke on seed 7")
        return train_trials(cfgs, **kw)

    monkeypatch.setitem(batch.train_jobs.__kwdefaults__, "train", train)
