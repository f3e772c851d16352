"""A trial's outcome: the typed `Result`, its one reader and writer, the objective policy, and the
aggregation of a trial's members (seeds, folds).

`result.json` in a job directory is `Result` as JSON; everything that reads one (the report, the
sweeper, resume) goes through `Result.read`, so a missing or unreadable file is one case, handled
once.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger("hpjax")

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
MODES = ("min", "max")


def worst_objective(mode: str) -> float:
    """The objective a failed or diverged trial hands back: no sweeper can prefer it."""
    return -math.inf if mode == "max" else math.inf


def better(a: float, b: float, mode: str) -> bool:
    """Whether objective `a` beats `b` under `mode` ("min" or "max")."""
    return a > b if mode == "max" else a < b


def parse_objectives(objectives: Sequence[str]) -> dict[str, str]:
    """`["val/accuracy:max", "num_params:min"]` -> {"val/accuracy": "max", "num_params": "min"}."""
    parsed = {}
    for item in objectives:
        metric, _, mode = str(item).rpartition(":")
        if not metric or mode not in MODES:
            raise ValueError(f"hydra.sweeper.objectives: {item!r} must be metric:min or "
                             f"metric:max, e.g. [val/accuracy:max, num_params:min]")
        parsed[metric] = mode
    return parsed


def json_safe(metrics: dict) -> dict:
    """NaN and infinities as null: JSON has no such numbers."""
    return {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v
            for k, v in metrics.items()}


@dataclass
class Result:
    """What one trial produced, as written to its `result.json`."""

    # "ok", "diverged", "failed" (a config error, in a sweep), "pruned" (stopped by a
    # bracket or a pruner at `epochs_run`; its objective is its best epoch's so far), or
    # "interrupted" (SIGINT/SIGTERM under Hydra's basic sweeper; a rerun trains it again)
    status: str
    objective: Optional[float]  # null unless ok; the task function then returns the worst
    objective_metric: str
    objective_mode: str
    best_epoch: Optional[int] = None
    best: dict = field(default_factory=dict)  # the best epoch's metrics ("val/accuracy", ...)
    test: dict = field(default_factory=dict)  # the best epoch's parameters on the test split
    epochs_run: int = 0
    stopped_early: bool = False
    # A scheduler stopped it (status "pruned"): {"epoch": its last epoch, "reason": the
    # scheduler's, e.g. "rung 1 (epoch 3): not among the 3 best of 9"}
    stopped: Optional[dict] = None
    diverged_epoch: Optional[int] = None
    compile_time_s: float = 0.0  # a population's time is shared equally by its members
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    num_params: int = 0
    seed: int = 0
    launcher: str = "basic"
    error: Optional[str] = None
    # A trial of several members (train.repeats > 1, data.cv_folds > 1): the values above are
    # means over members; `members` holds each member's seed, fold, status, objective, best epoch
    # and test metrics; `objective_std` is the standard deviation of their objectives.
    objective_std: Optional[float] = None
    members: Optional[dict] = None
    fold: Optional[int] = None  # the fold of a single member, in cross-validation
    resumed_from_epoch: Optional[int] = None  # continued from the checkpoint of this epoch
    # The population (vmap launcher) the trial trained in: label, start and end (Unix time),
    # members, compile_s (the whole program's); the report draws the populations from these.
    population: Optional[dict] = None
    # Population-based training: `lineage` (epoch, donor member) of each exploit, `schedule`
    # (the values its parameters were trained with, from epoch on, inherited from its donors)
    # and `root` (the member whose initial parameters it carries)
    pbt: Optional[dict] = None

    @classmethod
    def failed(cls, error: Any, metric: str, mode: str) -> "Result":
        """The result of a trial that could not run (a bad value in a sweep)."""
        return cls("failed", None, metric, mode, error=str(error))

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.objective is not None

    def sweeper_value(self) -> float:
        """What the task function returns: the objective, or the worst value when there is none."""
        return self.objective if self.objective is not None else worst_objective(
            self.objective_mode)

    def metric(self, name: str) -> Optional[float]:
        """A metric by name: `val/accuracy` (best epoch), `test/accuracy`, or a top-level number
        such as `num_params`, `train_time_s`, `objective`."""
        for value in (self.best.get(name), self.test.get(name),
                      getattr(self, name, None) if name in _NAMES else None):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    def as_dict(self) -> dict:
        """The fields as `dataclasses.asdict` gives them, without its deep copy (a result's
        values are JSON's: numbers, strings, lists and dicts of them)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def write(self, output_dir: str | Path) -> None:
        """Writes `result.json` whole or not at all (a kill mid-write leaves the old file)."""
        write_atomic(os.path.join(output_dir, RESULT_FILE), json.dumps(
            json_safe(self.as_dict()) | {"best": json_safe(self.best)}, indent=2))

    @classmethod
    def read(cls, job_dir: str | Path) -> Optional["Result"]:
        """The job's `result.json`, or None when it has none (or one that does not parse)."""
        path = os.path.join(job_dir, RESULT_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s): the trial counts as incomplete", path, e)
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in _NAMES})
        except (TypeError, AttributeError) as e:  # JSON, but not a whole result
            log.warning("%s is not a trial's result (%s): the trial counts as incomplete",
                        path, e)
            return None


_FIELDS = tuple(f.name for f in dataclasses.fields(Result))
_NAMES = frozenset(_FIELDS)


def write_atomic(path: str | Path, text: str) -> None:
    """Writes a file whole or not at all: a temporary file beside it, renamed over it (a kill
    mid-write leaves the old file, or none). Inside `background_writes()`, the writer's thread
    writes it, after everything asked before."""
    if _writer is not None:
        _writer.submit(_write_atomic, path, text)
    else:
        _write_atomic(path, text)


def _write_atomic(path: str | Path, text: str) -> None:
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
    write_whole(path, tmp, text.encode())


@contextlib.contextmanager
def naming(path: str | Path, tmp: Optional[str | Path] = None) -> Iterator[None]:
    """Within it, an OSError (a full or read-only disk) names `path`, the file its reader
    knows: `f.write`'s names no file, and one about the temporary file `tmp` is `path`'s."""
    try:
        yield
    except OSError as e:
        if e.filename is None or tmp is not None and e.filename == os.fspath(tmp):
            raise OSError(e.errno, e.strerror, os.fspath(path)) from None
        raise


def write_whole(path: str | Path, tmp: str | Path, data: bytes) -> None:
    """Writes `data` to `tmp` and renames it over `path`. A failed write (a full or read-only
    disk) leaves the old file as it was and no temporary one, and its error names the file."""
    try:
        with naming(path, tmp):
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Writer:
    """Writes files from a thread of its own, in the order they are asked for.

    A batch's jobs each write five files (`.hydra/*.yaml`, `metrics.jsonl`, `result.json`) and a
    log; the system calls release the GIL, so the launcher's thread goes on with the next job
    while this one writes. Whoever reads what was written (the sweeper telling results, the
    report) waits for `flush()` first; a kill before then loses the unwritten files of jobs
    without a `result.json` (written last), which count as incomplete and run again.
    """

    def __init__(self) -> None:
        self.tag: Any = None  # what the next writes belong to (a job): `flush()` says which failed
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failed: dict = {}  # tag -> the first error of its writes
        self._log: Optional[tuple] = None  # (path, open file) of the log being appended to
        self._thread = threading.Thread(target=self._run, name="hpjax-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args: Any) -> None:
        """Calls `fn(*args)` on the writer's thread, after everything submitted before."""
        self._queue.put((fn, args, self.tag))

    def append(self, path: str, text: str, mode: str = "a", encoding: Optional[str] = None) -> None:
        """Appends `text` to a log file (opened with `mode` if it is not the one open)."""
        self.submit(self._append, path, text, mode, encoding)

    def flush(self) -> dict:
        """Waits until everything submitted is written; returns {tag: error} of writes that
        failed since the last flush."""
        done = threading.Event()
        self._queue.put((None, done, None))
        done.wait()
        failed, self._failed = self._failed, {}
        return failed

    def close(self) -> dict:
        failed = self.flush()
        self._queue.put((None, None, None))
        self._thread.join()
        return failed

    def _append(self, path: str, text: str, mode: str, encoding: Optional[str]) -> None:
        with naming(path):
            if self._log is None or self._log[0] != path:
                self._close_log()
                self._log = (path, open(path, mode, encoding=encoding))
            self._log[1].write(text)

    def _close_log(self) -> None:
        if self._log is not None:
            log, self._log = self._log[1], None
            log.close()

    def _run(self) -> None:
        while True:
            fn, args, tag = self._queue.get()
            if fn is None:
                try:
                    self._close_log()
                except OSError as e:
                    self._failed.setdefault(tag, e)
                if args is None:
                    return
                args.set()
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001  (the job's, told at the next flush)
                self._failed.setdefault(tag, e)


_writer: Optional[Writer] = None  # the writer of `background_writes()` in progress


@contextlib.contextmanager
def background_writes() -> Iterator[Writer]:
    """Within it, `write_atomic` (`result.json`, `metrics.jsonl`) hands its files to a `Writer`;
    at its end everything is written."""
    global _writer
    if _writer is not None:  # nested: the outer one flushes
        yield _writer
        return
    _writer = writer = Writer()
    try:
        yield writer
    finally:
        _writer = None
        for tag, error in writer.close().items():
            log.error("files of %s were not written: %s", tag, error)


def read_metrics(job_dir: str | Path) -> list[dict]:
    """A job's `metrics.jsonl` rows; a torn last line (a kill mid-append) is skipped."""
    rows = []
    try:
        lines = (Path(job_dir) / METRICS_FILE).read_text().splitlines()
    except OSError:
        return rows
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                log.warning("%s: line %d is not JSON: skipped", Path(job_dir) / METRICS_FILE,
                            i + 1)
    return rows


def metrics_line(row: dict) -> str:
    """One epoch's row as a line of `metrics.jsonl`."""
    return json.dumps(json_safe(row)) + "\n"


def write_metrics(rows: list, output_dir: str | Path) -> None:
    write_atomic(os.path.join(output_dir, METRICS_FILE), "".join(map(metrics_line, rows)))


@dataclass
class Outcome:
    """What one trial produced: its result and its metrics.jsonl rows."""

    result: Result
    rows: list = field(default_factory=list)


def _mean(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]} if dicts else {}


def aggregate(members: list[Outcome]) -> Outcome:
    """One trial's outcome from the outcomes of its members (seeds, folds): means, and each
    member's values, as scikit-learn's `cv_results_` report folds."""
    if len(members) == 1:
        return members[0]
    results = [o.result for o in members]
    r = dataclasses.replace(results[0], fold=None)
    bad = [x.status for x in results if x.status not in ("ok", "pruned")]
    # A pruned trial's members are all pruned together, and keep their objectives.
    r.status = bad[0] if bad else results[0].status
    objectives = [x.objective for x in results]
    r.objective = float(np.mean(objectives)) if not bad else None
    r.objective_std = float(np.std(objectives)) if not bad else None
    finished = [x for x in results if x.best_epoch is not None]
    r.best = _mean([x.best for x in finished])
    r.test = _mean([x.test for x in finished])
    r.best_epoch = int(np.median([x.best_epoch for x in finished])) if finished else None
    r.epochs_run = max(x.epochs_run for x in results)
    r.stopped_early = all(x.stopped_early for x in results)
    diverged = [x.diverged_epoch for x in results if x.diverged_epoch is not None]
    r.diverged_epoch = min(diverged) if diverged else None
    for key in ("compile_time_s", "train_time_s", "samples_per_s"):
        setattr(r, key, round(sum(getattr(x, key) for x in results), 4))
    r.members = {"seed": [x.seed for x in results],
                 **({"fold": [x.fold for x in results]} if results[0].fold is not None else {}),
                 "status": [x.status for x in results], "objective": objectives,
                 "best_epoch": [x.best_epoch for x in results],
                 **{k: [x.test.get(k) for x in results] for k in r.test}}
    rows = []
    for e in range(max(len(o.rows) for o in members)):
        ran = [o.rows[e] for o in members if len(o.rows) > e]
        rows.append({**_mean(ran), "epoch": e + 1, "members": len(ran)})
    return Outcome(r, rows)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def log_result(result: Result, compilations: Optional[int] = None, cache_hits: int = 0) -> None:
    """The lines a finished trial logs."""
    if result.status == "diverged":
        log.warning("loss became NaN or infinite in epoch %d: trial stopped as diverged",
                    result.diverged_epoch)
    elif result.stopped_early:
        log.info("early stopping after epoch %d (best epoch %d)", result.epochs_run,
                 result.best_epoch)
    test = "test/accuracy" if "test/accuracy" in result.test or not result.test else (
        "test/" + result.objective_metric.split("/")[-1])  # regression: test/r2, ...
    log.info("%s: %s=%s at best epoch %s, %s=%s%s", result.status,
             result.objective_metric, _fmt(result.objective), result.best_epoch, test,
             _fmt(result.test.get(test)),
             f", {compilations} new compilations ({result.compile_time_s:.2f} s, "
             f"{cache_hits} from the persistent cache)" if compilations is not None else "")
