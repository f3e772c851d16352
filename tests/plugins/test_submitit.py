"""The submitit launchers (`hpjax_slurm`, `hpjax_submitit_local`): Hydra's contract, how the
driver watches SLURM jobs, and plugin discovery without the `slurm` extra.

Sweeps on the real one-node cluster are in test_cluster.py.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import LauncherTestSuite

from hydra_plugins.hpjax_submitit._impl import HpjaxSlurmImpl
from hydra_plugins.hpjax_submitit.launcher import HpjaxLocalLauncher, HpjaxSlurmLauncher


@pytest.mark.parametrize("cls", [HpjaxLocalLauncher, HpjaxSlurmLauncher])
def test_discovery(cls):
    assert cls.__name__ in [c.__name__ for c in Plugins.instance().discover(Launcher)]


@pytest.mark.usefixtures("unset_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [(
    "hpjax_submitit_local", ["hydra.launcher.timeout_min=2", "hydra.launcher.poll_s=0.05"])])
class TestHpjaxSubmititLocalLauncher(LauncherTestSuite):
    """Hydra's suite, as hydra-submitit-launcher runs it for `submitit_local`: its task functions
    are not hpjax's, so each job is a local submitit process of its own."""


# -- the driver's watch over SLURM jobs, with SLURM replaced -----------------------------------
class FakeJob:
    """A submitted job: its result pickle exists once it finished."""

    def __init__(self, job_id: str, folder: Path, unit: list) -> None:
        self.job_id, self.unit = job_id, unit
        self.paths = SimpleNamespace(result_pickle=folder / f"{job_id}_result.pkl")

    def finish(self) -> None:
        self.paths.result_pickle.touch()

    def results(self) -> list:
        return [[JobReturn(overrides=o, status=JobStatus.COMPLETED, _return_value=num)
                 for num, o in self.unit]]


class FakeExecutor:
    def __init__(self, folder: Path) -> None:
        self.folder, self.jobs = folder, []

    def submit(self, fn, unit, state, scheduler=None) -> FakeJob:
        self.jobs.append(FakeJob(f"9{len(self.jobs)}", self.folder, unit))
        return self.jobs[-1]


UNITS = [[(0, ["a=0"])], [(1, ["a=1"]), (2, ["a=2"])], [(3, ["a=3"])]]


def watch(tmp_path, monkeypatch, answer, max_retries=2):
    """Runs the driver's wait over three SLURM jobs whose `squeue` gives `answer(call number,
    jobs)`; returns (JobReturns, squeue command lines, resubmitted jobs)."""
    jobs = [FakeJob(f"7_{u}", tmp_path, unit) for u, unit in enumerate(UNITS)]
    executor, calls = FakeExecutor(tmp_path), []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return answer(len(calls), jobs + executor.jobs)

    monkeypatch.setattr(subprocess, "run", run)
    launcher = HpjaxSlurmImpl(poll_s=0, max_retries=max_retries, submitit_folder=str(tmp_path))
    returns = launcher.wait(executor, UNITS, jobs, state={})
    return returns, calls, executor.jobs


def squeue(stdout="", returncode=0, stderr=""):
    return subprocess.CompletedProcess([], returncode, stdout=stdout, stderr=stderr)


def timeout(call, jobs):
    raise subprocess.TimeoutExpired("squeue", 60)


def no_controller(call, jobs):
    return squeue(returncode=1, stderr="slurm_load_jobs error: Unable to contact slurm controller")


def garbage(call, jobs):
    return squeue("squeue: warning: something unexpected\n")


def no_squeue(call, jobs):
    raise FileNotFoundError("squeue")


@pytest.mark.parametrize("failure", [timeout, no_controller, garbage, no_squeue])
def test_a_failed_slurm_query_resubmits_nothing(tmp_path, monkeypatch, caplog, failure):
    def answer(call, jobs):
        if call == 5:  # the jobs finish while SLURM cannot be asked
            for job in jobs:
                job.finish()
        return failure(call, jobs)

    with caplog.at_level(logging.WARNING):
        returns, calls, resubmitted = watch(tmp_path, monkeypatch, answer)
    assert resubmitted == []
    assert sorted(returns) == [0, 1, 2, 3]
    assert all(r.status == JobStatus.COMPLETED for r in returns.values())
    # one query per poll, for all three jobs, until their results are there
    assert len(calls) == 5
    assert all(c[0] == "squeue" and c[-1] == "--jobs=7_0,7_1,7_2" for c in calls)
    assert "SLURM query failed (1 in a row)" in caplog.text
    assert "count as still running" in caplog.text


@pytest.mark.parametrize("second", ["7_1|CANCELLED", "7_1|NODE_FAIL", ""],
                         ids=["cancelled", "node_fail", "unknown_to_slurm"])
def test_a_job_slurm_reports_ended_without_a_result_is_resubmitted_once(
        tmp_path, monkeypatch, caplog, second):
    def answer(call, jobs):
        if call == 1:
            return squeue("\n".join(["7_0|RUNNING", second, "7_2|PENDING"]) + "\n")
        for job in jobs:
            job.finish()
        return squeue("".join(f"{job.job_id}|RUNNING\n" for job in jobs))

    with caplog.at_level(logging.WARNING):
        returns, calls, resubmitted = watch(tmp_path, monkeypatch, answer)
    assert [job.unit for job in resubmitted] == [UNITS[1]]
    assert calls[1][-1] == "--jobs=7_0,7_2,90"  # the new job replaces the ended one
    assert len(calls) == 2
    assert {n: r.return_value for n, r in returns.items()} == {0: 0, 1: 1, 2: 2, 3: 3}
    assert "submitit job 7_1 (trials [1, 2]) ended without a result (SLURM state " \
        f"{second.partition('|')[2] or 'unknown: the job is gone'}): submitting it again, " \
        "retry 1 of 2" in caplog.text


def test_one_unknown_job_id_is_an_answer(tmp_path, monkeypatch):
    """`squeue --jobs=ID` of one id SLURM forgot exits 1: that job ended, the query worked."""
    def answer(call, jobs):
        pending = [job for job in jobs if not job.paths.result_pickle.exists()]
        if call == 1:
            jobs[0].finish()
            jobs[2].finish()
            return squeue("7_0|COMPLETED\n7_1|RUNNING\n7_2|COMPLETED\n")
        if call == 2:
            assert len(pending) == 1
            return squeue(returncode=1, stderr="slurm_load_jobs error: Invalid job id specified")
        for job in jobs:
            job.finish()
        return squeue()

    returns, calls, resubmitted = watch(tmp_path, monkeypatch, answer)
    assert [job.unit for job in resubmitted] == [UNITS[1]] and len(calls) == 3
    assert sorted(returns) == [0, 1, 2, 3]


def test_a_job_that_keeps_ending_without_a_result_fails_its_trials(tmp_path, monkeypatch):
    def answer(call, jobs):
        for job in jobs[::2]:
            job.finish()
        return squeue("".join(f"{job.job_id}|CANCELLED\n" for job in jobs))

    returns, calls, resubmitted = watch(tmp_path, monkeypatch, answer, max_retries=1)
    assert [job.unit for job in resubmitted] == [UNITS[1]]
    assert [returns[n].status for n in range(4)] == [JobStatus.COMPLETED, JobStatus.FAILED,
                                                     JobStatus.FAILED, JobStatus.COMPLETED]
    assert "SLURM state CANCELLED" in str(returns[1]._return_value)


def test_the_result_pickle_gets_a_grace_after_slurm_says_completed(tmp_path, monkeypatch):
    """A COMPLETED job's result may reach the driver's disk a moment later: it is taken."""
    def answer(call, jobs):
        if call == 3:
            for job in jobs:
                job.finish()
        return squeue("7_0|COMPLETED\n7_1|COMPLETED\n7_2|COMPLETED\n")

    jobs = [FakeJob(f"7_{u}", tmp_path, unit) for u, unit in enumerate(UNITS)]
    executor, calls = FakeExecutor(tmp_path), []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or answer(
        len(calls), jobs))
    launcher = HpjaxSlurmImpl(poll_s=0.5, submitit_folder=str(tmp_path))
    returns = launcher.wait(executor, UNITS, jobs, state={})
    assert executor.jobs == [] and len(calls) == 3 and sorted(returns) == [0, 1, 2, 3]


# -- a bracket trained rung by rung, its jobs run in this process ---------------------------
class InProcessExecutor:
    """submitit's executor whose jobs run as they are submitted, in this process: the
    scheduler reaches each through pickle, as it reaches a submitted job. `rounds`: the job
    numbers of each job, by round of submission."""

    def __init__(self) -> None:
        self.rounds: list[list[list[int]]] = []

    def batch(self):
        import contextlib

        self.rounds.append([])
        return contextlib.nullcontext()

    def submit(self, launcher, unit, state, scheduler=None):
        import pickle

        self.rounds[-1].append([n for n, _ in unit])
        result = launcher(unit, state, pickle.loads(pickle.dumps(scheduler)))
        return SimpleNamespace(job_id=f"{len(self.rounds)}_{len(self.rounds[-1])}",
                               paths=SimpleNamespace(result_pickle=Path("/nonexistent")),
                               done=lambda: True, results=lambda: [result])


def test_a_bracket_trains_rung_by_rung_in_a_job_per_chunk(tmp_path, monkeypatch):
    """SHA (R = 4, eta = 2: 4x1 2x2 1x4) over two widths in chunks of one trial (as
    test_fidelity's static-key bracket): each round trains every chunk with trials going on in
    a job of its own, up to the rung where they wait; the driver decides the rung over the
    whole bracket, and the next round continues the promoted trials from their checkpoints.
    The jobs per round and the epochs run are the table's, and every result is the in-process
    bracket's."""
    from helpers import STATIC, multirun, trials_in
    from hydra_plugins.hpjax_submitit._impl import HpjaxSubmititImpl

    executor = InProcessExecutor()
    monkeypatch.setattr(HpjaxSubmititImpl, "_executor", lambda self: executor)
    sha = [o for o in STATIC if not o.startswith("hydra.sweeper.algorithm")]
    sha += ["hydra.sweeper.algorithm=sha"]
    multirun([*sha, "hydra/launcher=hpjax_submitit_local"], tmp_path / "rungs")
    multirun([*sha, "hydra/launcher=vmap"], tmp_path / "vmap")
    results = {name: {t.number: json.loads((tmp_path / name / str(t.number) / "result.json")
                                            .read_text()) for t in trials_in(tmp_path / name)}
               for name in ("rungs", "vmap")}
    rungs, vmap = results["rungs"], results["vmap"]
    epochs = {n: r["epochs_run"] for n, r in rungs.items()}
    assert sorted(epochs.values()) == [1, 1, 2, 4]
    assert executor.rounds == [[[n] for n in range(4)],
                               [[n] for n in sorted(epochs) if epochs[n] >= 2],
                               [[n] for n in sorted(epochs) if epochs[n] == 4]]
    for n, r in rungs.items():
        assert (r["status"], r["epochs_run"], r["best_epoch"]) == (
            vmap[n]["status"], vmap[n]["epochs_run"], vmap[n]["best_epoch"])
        assert r["status"] == ("ok" if r["epochs_run"] == 4 else "pruned")
        # the driver's rung stopped it: its reason, as the in-process rule gives it
        assert r["stopped"] == vmap[n]["stopped"]
        assert r["objective"] == pytest.approx(vmap[n]["objective"], abs=1e-6)
        assert r["test"] == pytest.approx(vmap[n]["test"], abs=1e-6)
        # a trial that went on continued from its checkpoint at the rung before
        assert r["resumed_from_epoch"] == {1: None, 2: 1, 4: 2}[r["epochs_run"]]


# -- without the `slurm` extra ---------------------------------------------------------------
HIDE_EXTRA = """
import sys, warnings
sys.modules["hydra_plugins.hydra_submitit_launcher"] = None  # as if not installed
sys.modules["submitit"] = None
warnings.simplefilter("error")  # Hydra's scan reports a plugin's ImportError as a warning
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
print(sorted(c.__name__ for c in Plugins.instance().discover(Launcher)))
from hpjax.app import main
sys.argv = ["hpjax", *sys.argv[1:]]
main()
"""


def _without_extra(*args, cwd):
    return subprocess.run([sys.executable, "-c", HIDE_EXTRA, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_plugins_and_help_work_without_the_slurm_extra(tmp_path):
    out = _without_extra("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ("['BasicLauncher', 'HpjaxLocalLauncher', 'HpjaxSlurmLauncher', "
            "'HpjaxSubmititLauncher', 'VmapLauncher']") in out.stdout
    assert "hpjax: tune the hyperparameters" in out.stdout
    assert "Error importing" not in out.stderr


def test_asking_for_hpjax_slurm_without_the_extra_says_what_to_install(tmp_path):
    out = _without_extra("-m", "hydra/launcher=hpjax_slurm", "hydra.launcher.partition=gpu",
                         "train.epochs=1", cwd=tmp_path)
    assert out.returncode == 1
    assert ("hydra/launcher=hpjax_slurm needs hydra-submitit-launcher and submitit" in out.stderr
            and "pip install 'hpjax[slurm]'" in out.stderr), out.stderr
