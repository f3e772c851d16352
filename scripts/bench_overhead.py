"""Host overhead per trial of a sweep: everything a trial costs besides its training.

Sweeps of a tiny model (`data=iris train.epochs=1`, batches and populations of 64) of 64, 1,000
and 10,000 trials, for Hydra's basic sweeper (a grid over `train.seed`) and hpjax's sweeper (random
and TPE over learning rate, dropout and activation, one compile), each in a process of its own
(`hpjax -m ...` as a user runs it, its log in a file). Each prints the whole process's wall time,
the sweep's, the training time (compile + device: `hpjax.engine.loop.Training`), and the host's
milliseconds per trial split by stage (each stage's own time, the stages it calls excluded):

- study: asking and telling Optuna (the hpjax sweeper's study work, counting trials included),
- compose: composing and validating the jobs' configs (the sweeper's batch check included),
- job files: `.hydra/*.yaml`, `metrics.jsonl`, `result.json` (written, or queued and flushed),
- params: taking each trial's best parameters off the device and saving them (`train.save_params`:
  host work inside the population's training, counted here and not as training),
- callbacks+log: Hydra's callbacks, configuring the job's logging, log records,
- read result: reading `result.json` back (to tell the study),
- run_job, launcher: the rest of Hydra's `run_job` and the launcher's own work,
- report: `summary.csv`, `best.yaml` and the table at the end,
- other: the rest of the sweep's wall time.

Host ms per trial = (sweep - training) / trials, as wall time and as the main thread's CPU time
(stable when other processes share the cores; the stages are CPU time). Peak RSS is the
driver's resident memory.

    python scripts/bench_overhead.py [--trials 64,1000,10000] [--cases basic,random,tpe] [--doc]

`--doc` writes the table into docs/benchmarks.md (section bench_overhead), replacing the last one.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _benchdoc import DOC, write_section

STAGES = ("study", "compose", "job files", "params", "callbacks+log", "read result", "run_job",
          "launcher", "report")
COMMON = ["data=iris", "train.epochs=1", "hydra.launcher.max_population=64"]
CASES = {
    "basic": ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=64", "optimizer.lr=0.01",
              "activation=relu", "train.seed=range(0,{n})"],
    "random": ["hydra/sweeper=hpjax", "hydra.sweeper.algorithm=random",
               "hydra.sweeper.n_trials={n}", "hydra.sweeper.batch_size=64",
               "optimizer.lr=tag(log, interval(1e-4, 1e-1))", "model.dropout=interval(0, 0.5)",
               "activation=choice(relu, tanh, gelu)"],
}
# The command as a user types it: Hydra's basic sweeper, one batch of every job
CASES["grid"] = ["train.seed=range(0,{n})"]
CASES["tpe"] = [a.replace("algorithm=random", "algorithm=tpe") for a in CASES["random"]]

_own = defaultdict(lambda: [0.0, 0.0])  # stage -> its own seconds: [wall, main thread's CPU]
_stack: list = []  # the children's time of each timed call in progress


def _timed(stage, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.thread_time()
        _stack.append([0.0, 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            spent = (time.perf_counter() - start, time.thread_time() - cpu)
            children = _stack.pop()
            for i in (0, 1):
                _own[stage][i] += spent[i] - children[i]
                if _stack:
                    _stack[-1][i] += spent[i]
    return wrapper


def _patch(owner, name, stage, kind=None):
    fn = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if fn is None:
        return
    if isinstance(fn, classmethod):
        setattr(owner, name, classmethod(_timed(stage, fn.__func__)))
    elif isinstance(fn, staticmethod):
        setattr(owner, name, staticmethod(_timed(stage, fn.__func__)))
    else:
        setattr(owner, name, _timed(stage, fn))


def _instrument() -> None:
    """Wraps the functions of each stage (by name: where one is missing, its stage reads 0)."""
    import logging

    import hydra.core.utils as hydra_utils
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.plugins.sweeper import Sweeper

    import hpjax.engine.jobs
    import hpjax.engine.loop
    import hpjax.report
    import hpjax.results
    from hydra_plugins.hpjax_launcher import _compose
    from hydra_plugins.hpjax_launcher import _impl as launcher
    from hydra_plugins.hpjax_sweeper import _impl as sweeper

    for name in ("_study", "_prepare", "_claim", "_tell", "_tell_result", "_finished",
                 "_fail_stale", "_enqueue_grid"):
        _patch(sweeper.HpjaxSweeperImpl, name, "study")
    for name in ("_best_line", "_tell_values"):
        _patch(sweeper, name, "study")
    try:  # the batched study work, where there is such a module
        from hydra_plugins.hpjax_sweeper import _batch
        for name in _batch.__all__:
            _patch(_batch, name, "study")
    except ImportError:
        pass
    _patch(ConfigLoaderImpl, "load_sweep_config", "compose")
    _patch(_compose.FastSweepConfigs, "__call__", "compose")
    _patch(Sweeper, "validate_batch_is_legal", "compose")
    _patch(launcher.VmapLauncherImpl, "_job", "compose")
    _patch(launcher.VmapLauncherImpl, "_compose", "compose")
    _patch(hydra_utils, "_save_config", "job files")
    _patch(hpjax.results.Result, "write", "job files")
    for module in (hpjax.results, hpjax.engine.jobs):
        _patch(module, "write_metrics", "job files")
    try:  # the vmap launcher's templated jobs
        from hydra_plugins.hpjax_launcher import _fast, _jobfiles
        _patch(_fast.Templates, "job", "compose")
        _patch(_jobfiles, "write_hydra_files", "job files")
        _patch(_jobfiles.JobLogFiles, "move", "callbacks+log")
        _patch(launcher.VmapLauncherImpl, "_job_logging", "callbacks+log")
    except ImportError:
        pass
    _patch(Callbacks, "on_job_start", "callbacks+log")
    _patch(Callbacks, "on_job_end", "callbacks+log")
    for module in (hydra_utils, launcher):
        _patch(module, "configure_log", "callbacks+log")
    _patch(logging.Logger, "handle", "callbacks+log")
    _patch(hpjax.results.Result, "read", "read result")
    _patch(hydra_utils, "run_job", "run_job")
    _patch(launcher, "run_job", "run_job")
    _patch(launcher.VmapLauncherImpl, "launch", "launcher")
    _patch(hpjax.report, "report", "report")
    for module in (hpjax.engine.loop, hpjax.engine.jobs):
        _patch(module, "train_population", "training")
    for name in ("advance", "finish"):  # each population's epochs, in the one epoch loop
        _patch(getattr(hpjax.engine.loop, "Training", None), name, "training")
    _patch(hpjax.engine.loop._Run, "save_params", "params")
    _patch(sweeper.HpjaxSweeperImpl, "sweep", "sweep")
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    _patch(BasicSweeper, "sweep", "sweep")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_one(args: list[str], out: Path) -> None:
    """In the child process: `hpjax -m <args>` with the stages timed; the figures to `out`."""
    start = time.perf_counter()
    from hpjax import app

    _instrument()
    sys.argv = ["hpjax", "-m", *args]
    try:
        app.main()
    except SystemExit as e:
        if e.code:
            raise
    wall = time.perf_counter() - start
    out.write_text(json.dumps({
        "wall": wall, "cpu": time.process_time(), "stages": dict(_own), "rss_mb": _rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(case: str, n: int, workdir: Path) -> dict:
    """One sweep in a process of its own: its figures, its log's line count and size."""
    sweep_dir = workdir / f"{case}-{n}"
    args = [a.format(n=n) for a in CASES[case]] + COMMON + [f"hydra.sweep.dir={sweep_dir}"]
    out, log = workdir / f"{case}-{n}.json", workdir / f"{case}-{n}.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *args],
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{case} {n} failed (rc {proc.returncode}); see {log}")
    figures = json.loads(out.read_text())
    text = log.read_text()
    figures["log_lines"], figures["log_kb"] = text.count("\n"), len(text) / 1024
    trials = sum(1 for p in sweep_dir.iterdir() if p.name.isdigit())
    assert trials == n, f"{case} {n}: {trials} job directories"
    return figures


def table(rows: list[tuple[str, int, dict]]) -> str:
    """Wall seconds, then host ms per trial as wall time and as the main thread's CPU time (what
    the host's work costs when other processes share the cores), and each stage's CPU ms."""
    head = ["sweep", "trials", "wall s", "sweep s", "train s", "host ms/trial",
            "host CPU ms/trial", *STAGES, "other", "peak RSS MB", "log lines"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, n, f in rows:
        s = {k: v for k, v in f["stages"].items()}
        zero = [0.0, 0.0]
        sweep, host = [], []
        for i in (0, 1):
            sweep.append(sum(s.get(k, zero)[i] for k in (*STAGES, "sweep", "training")))
            host.append(sweep[i] - s.get("training", zero)[i])
        per = [1000 * s.get(k, zero)[1] / n for k in STAGES]
        other = 1000 * host[1] / n - sum(per)
        lines.append("| " + " | ".join([
            case, f"{n:,}", f"{f['wall']:.1f}", f"{sweep[0]:.1f}",
            f"{s.get('training', zero)[0]:.1f}", f"**{1000 * host[0] / n:.1f}**",
            f"**{1000 * host[1] / n:.1f}**", *(f"{v:.2f}" for v in per), f"{other:.2f}",
            f"{f['peak_rss_mb']:.0f}", f"{f['log_lines']:,}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        run_one(sys.argv[4:], Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", default="64,1000,10000")
    parser.add_argument("--cases", default="basic,random,tpe")
    parser.add_argument("--keep", help="a folder to keep the sweeps in (default: deleted)")
    parser.add_argument("--doc", nargs="?", const=str(DOC), type=Path,
                        help=f"write the table into this file's bench_overhead section ({DOC})")
    a = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(a.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in map(int, a.trials.split(",")):
            for case in a.cases.split(","):
                rows.append((case, n, measure(case, n, workdir)))
                print(f"{case} {n}: done, {rows[-1][2]['wall']:.1f} s", file=sys.stderr,
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(table(rows))
    if a.doc:
        write_section("bench_overhead", "Host overhead per trial (`scripts/bench_overhead.py`)",
                      f"python scripts/bench_overhead.py --trials {a.trials} --cases {a.cases}",
                      f"""
Sweeps of a tiny model (`data=iris train.epochs=1`, batches and populations of 64), each a
`hpjax -m` process of its own, for Hydra's basic sweeper (a grid over `train.seed`) and hpjax's
(random and TPE over learning rate, dropout and activation): the wall time, the training time
(compile + device), the host's milliseconds per trial (the sweep minus its training) as wall and
as the driver's CPU time, split by stage (CPU ms a trial: the stages are listed in the script's
docstring), the driver's peak memory and the lines it logged.

{table(rows)}
""", doc=a.doc)


if __name__ == "__main__":
    main()
