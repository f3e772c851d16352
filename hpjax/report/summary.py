"""The end of every sweep, whichever sweeper ran it: `summary.csv`, `best.yaml`, `report.html`
(`hpjax.report.html`) and a ranked table.

Everything here reads the job directories (`.hydra/overrides.yaml`, `result.json`), so a report can
be rebuilt at any time: `python -m hpjax.report <sweep_dir>`.
"""

import argparse
import csv
import io
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hpjax.report.trials import Trial, objectives_of, rank, read_trials, swept_keys
from hpjax.results import Result, better, parse_objectives, write_atomic

log = logging.getLogger("hpjax")

METRIC_COLUMNS = ("val/loss", "val/accuracy", "test/loss", "test/accuracy")
REGRESSION_COLUMNS = ("val/loss", "val/r2", "val/mse", "val/mae", "test/loss", "test/r2",
                      "test/mse", "test/mae")



def write_summary_csv(trials: list[Trial], objectives: dict, path: Path,
                      ranking: Optional[tuple] = None) -> None:
    """One row per trial; `ranking`: `rank(trials, objectives)` where already known."""
    keys = swept_keys(trials)
    ranked, front = ranking or rank(trials, objectives)
    position = {t.job: i + 1 for i, t in enumerate(ranked) if t.ok}
    regression = trials and not any(t.metric("val/accuracy") is not None for t in trials)
    metrics = list(dict.fromkeys([*objectives, *(REGRESSION_COLUMNS if regression
                                                  else METRIC_COLUMNS), *host_columns(trials)]))
    with io.StringIO(newline="") as f:  # written whole below: a kill leaves the old file
        w = csv.writer(f)
        w.writerow(["trial", "rank", *keys, "status", "ended", "objective", "objective_std",
                    *metrics,
                    "best_epoch",
                    "epochs_run", "num_params", "time_s", "pareto", "error"])
        for t in trials:
            values = dict(o.split("=", 1) for o in t.overrides)
            w.writerow([t.job, position.get(t.job, ""), *(values.get(k, "") for k in keys),
                        t.status, t.ended, _cell(t.get("objective")),
                        _cell(t.get("objective_std")),
                        *(_cell(t.metric(m)) for m in metrics),
                        _cell(t.get("best_epoch")), _cell(t.get("epochs_run")),
                        _cell(t.get("num_params")),
                        f"{t.seconds:.3f}" if t.result else "", t.job in front,
                        t.get("error") or ""])
        write_atomic(path, f.getvalue())


def host_columns(trials: list[Trial]) -> list[str]:
    """The host metrics (`task.host_metrics`, a host objective) the trials report: val/ then
    test/ columns."""
    from hpjax.engine.host_metrics import BY_TASK

    host = {n for task in BY_TASK.values() for n in task}
    found = {k for t in trials if t.result for k in (*t.result.best, *t.result.test)
             if k.split("/", 1)[-1] in host}
    return sorted(found, key=lambda k: (not k.startswith("val/"), k))


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def schedule_changes(pbt: dict) -> dict:
    """A PBT trial's record as config changes: its root's seed and first values, and the later
    values as `train.hparam_schedule` ("EPOCH: key=value ...")."""
    first, *later = pbt["schedule"]
    return {**{k: v for k, v in first.items() if k != "epoch"},
            "train.hparam_schedule": [f"{e['epoch']}: " + " ".join(
                f"{k}={v!r}" for k, v in e.items() if k != "epoch") for e in later]}


def write_best_yaml(best: Trial, objectives: dict, path: Path,
                    changes: Optional[dict] = None) -> None:
    """The best trial's full composed config, as a primary config `hpjax` can run again;
    `changes` (dotted key -> value) replace values (PBT's schedule: `best_schedule.yaml`)."""
    hydra_file = best.job_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices if hydra_file.exists() else {}
    config = OmegaConf.load(best.job_dir / ".hydra" / "config.yaml")
    for key, value in (changes or {}).items():
        OmegaConf.update(config, key, value)
    summary = ", ".join(f"{m}={best.metric(m)}" for m in objectives)
    header = (f"# Best trial of the sweep in {path.parent.resolve()}: job {best.job}, {summary}\n"
              f"# Overrides: {' '.join(best.overrides)}\n"
              f"# Run it again:  hpjax --config-dir {path.parent.resolve()} --config-name "
              f"{path.stem}\n")
    # Group choices as the trial made them; hydra/* and sweep presets do not change training,
    # and `tuned` follows the task and the model.
    defaults = ["config"] + [{f"override {group}": choice} for group, choice in choices.items()
                             if not group.startswith("hydra/") and group not in (
                                 "search", "tuned") and choice is not None]
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults + ["_self_"]}))
    write_atomic(path, header + body + OmegaConf.to_yaml(config))


# The table shows the best TOP trials and at most NOT_OK of the others (summary.csv has all).
TOP, NOT_OK = 20, 10


def format_table(trials: list[Trial], objectives: dict, top: int = TOP,
                 ranking: Optional[tuple] = None) -> Any:
    from rich.markup import escape
    from rich.table import Table

    ranked, front = ranking or rank(trials, objectives)
    several = len(objectives) > 1
    title = (f"{len(trials)} trials, " + (f"Pareto front of {', '.join(objectives)} first"
                                           if several else f"ranked by {next(iter(objectives))}"))
    table = Table(title=escape(title))  # text as written: a metric, a value may hold [...]
    shown = ("val/accuracy", "test/accuracy")
    if not any(t.metric("val/accuracy") is not None for t in trials):  # regression
        shown = tuple(f"test/{m.split('/')[-1]}" for m in objectives if m.startswith("val/"))
    metrics = [*objectives] + [c for c in shown if c not in objectives]
    columns = ["rank", "trial", "overrides", "status", *metrics, "epochs", "time s"]
    columns += ["pareto"] if several else []
    for name in columns:
        table.add_column(escape(name), overflow="fold",
                         justify="left" if name in ("overrides", "status") else "right")
    shown = [t for t in ranked if t.ok][:top] + [t for t in ranked if not t.ok][:NOT_OK]
    if len(shown) < len(trials):
        table.caption = (f"the best {min(top, len(shown))} and {len(shown) - min(top, len(shown))}"
                         f" not finished of {len(trials)} trials: summary.csv lists every one")
    # Overrides shared by every trial (train.epochs=5, search=tpe) say nothing about the ranking.
    common = set.intersection(*(set(t.overrides) for t in trials)) if len(trials) > 1 else set()
    for i, t in enumerate(shown):
        overrides = " ".join(o for o in t.overrides if o not in common)
        cells = [str(i + 1) if t.ok else "-", str(t.job), escape(overrides), escape(t.ended)]
        # A trial of several seeds or folds shows its objective as mean ± std.
        std = t.get("objective_std")
        cells += [_fmt(t.metric(m)) + (f" ± {std:.4f}" if std is not None and m ==
                                       t.get("objective_metric") else "") for m in metrics]
        cells += [str(t.get("epochs_run", "-")), f"{t.seconds:.2f}" if t.result else "-"]
        if several:
            cells.append("*" if t.job in front else "")
        table.add_row(*cells)
    return table


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 1e4 and v != int(v) else f"{v:g}"


def report(sweep_dir: Path, sweeper_objectives: Optional[dict] = None,
           console: Any = None, trials: Optional[list[Trial]] = None) -> Optional[Trial]:
    """Writes `summary.csv` and `best.yaml` into `sweep_dir`, prints the table; returns the best.
    `trials`: the sweep's, where already read."""
    from rich.console import Console
    from rich.markup import escape

    trials = read_trials(sweep_dir) if trials is None else trials
    if not trials:
        return None
    objectives = objectives_of(trials, sweeper_objectives)
    ranking = rank(trials, objectives)
    write_summary_csv(trials, objectives, sweep_dir / "summary.csv", ranking)
    ranked = ranking[0]
    best = ranked[0] if ranked and ranked[0].ok else None
    if best is not None:
        try:
            write_best_yaml(best, objectives, sweep_dir / "best.yaml")
            if best.get("pbt"):  # the values its parameters were trained with, replayable
                write_best_yaml(best, objectives, sweep_dir / "best_schedule.yaml",
                                schedule_changes(best.get("pbt")))
        except (OSError, ValueError) as e:  # its .hydra/ files are missing or broken
            log.warning("best.yaml not written: trial %d's config is unreadable (%s)", best.job,
                        e)
    if console is None:  # piped or in a SLURM log: wide enough for a row per line
        terminal = Console()
        console = Console(width=max(120, terminal.width) if terminal.is_terminal else 240)
    console.print(format_table(trials, objectives, ranking=ranking))
    groups = failures(trials)
    for error, jobs in groups[:NOT_OK]:  # each error once, with its trials
        console.print(escape(f"{_count(len(jobs))} failed: {error} ({_jobs(jobs)})"),
                      soft_wrap=True)
    if len(groups) > NOT_OK:
        console.print(f"... and {len(groups) - NOT_OK} more errors (summary.csv)")
    return best


def failures(trials: list[Trial]) -> list[tuple[str, list[int]]]:
    """The trials that failed with an error (`status` failed), grouped by their error, the most
    common first: [(error, [job numbers])]."""
    groups: dict[str, list[int]] = {}
    for t in trials:
        if t.status == "failed":
            groups.setdefault(str(t.get("error") or "no error recorded"), []).append(t.job)
    return sorted(groups.items(), key=lambda g: (-len(g[1]), g[1][0]))


def verdict(trials: list[Trial]) -> tuple[int, str]:
    """(exit code, its line) for a sweep that ran (`hpjax.errors`): 0 when no trial failed with
    an error, 3 when some did, 4 when every one did."""
    from hpjax.errors import ALL_FAILED, SOME_FAILED

    groups = failures(trials)
    failed = sum(len(jobs) for _, jobs in groups)
    if not failed:
        return 0, ""
    error, jobs = groups[0]
    others = len(groups) - 1
    more = f"; {others} other error{'s' if others > 1 else ''} in summary.csv" if others else ""
    if failed == len(trials):
        return ALL_FAILED, f"all {_count(failed)} failed: {error} ({_count(len(jobs))}){more}"
    return SOME_FAILED, (f"{failed} of {_count(len(trials))} failed: {error} "
                         f"({_count(len(jobs))}){more}; exit code {SOME_FAILED}")


def _count(n: int) -> str:
    return f"{n} trial{'s' if n != 1 else ''}"


def _jobs(jobs: list[int]) -> str:
    shown = ", ".join(map(str, jobs[:8]))
    return f"trial{'s' if len(jobs) > 1 else ''} {shown}{', ...' if len(jobs) > 8 else ''}"


def keep_params(sweep_dir: Path, keep: int, sweeper_objectives: Optional[dict] = None) -> int:
    """Removes the saved parameters (`params.msgpack`, `params/`) of every trial but the best
    `keep` (in the table's order); returns how many were removed."""
    import shutil

    from hpjax.engine.checkpoint import PARAMS_DIR, PARAMS_FILE

    trials = read_trials(sweep_dir)
    ranked, _ = rank(trials, objectives_of(trials, sweeper_objectives)) if trials else ([], 0)
    kept = {t.job for t in ranked[:max(keep, 0)] if t.ok}
    removed = 0
    for t in trials:
        if t.job in kept:
            continue
        file, folder = t.job_dir / PARAMS_FILE, t.job_dir / PARAMS_DIR  # (an Orbax one before)
        if file.is_file() or folder.is_dir():
            file.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.info("kept the parameters of the best %d trials (hydra.sweeper.keep_params)", keep)
    return removed


def grid_space(config: DictConfig) -> str:
    """A grid sweeper's space (Hydra's basic sweeper): each axis, its values, where it came from
    (the command line, a `search=` preset, the config file) and the number of jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    preset = OmegaConf.select(config, "hydra.runtime.choices.search", default=None)
    origin = ("default grid (conf/search/default.yaml)" if preset == "default" else
              f"preset search={preset}" if preset else "config file (hydra.sweeper.params)")
    axes = {}
    parser = OverridesParser.create()
    for line, where in [(f"{k}={v}", origin) for k, v in params.items()] + [
            (o, "command line") for o in config.hydra.overrides.task]:
        o = parser.parse_overrides([line])[0]
        if o.is_sweep_override():
            axes[o.get_key_element()] = (list(o.sweep_string_iterator()), where)
        else:
            axes.pop(o.get_key_element(), None)
    total = math.prod(len(v) for v, _ in axes.values())
    width = max((len(k) for k in axes), default=0)
    return "\n".join([f"search space: {len(axes)} axes, {total} trials (grid)"] + [
        f"  {k:<{width}}  {','.join(v)}  [{where}]" for k, (v, where) in axes.items()])


class SweepReport(Callback):
    """Writes the sweep's report when the multirun ends, from the job directories.

    It never needs a job's composed config (`wants_jobs` is False), so hpjax's launchers end
    jobs from templates under any sweeper. Where a launcher runs Hydra's `run_job` anyway (Hydra's
    basic launcher) under a sweeper that logs no progress of its own, each job logs a progress
    line as it ends; hpjax's sweeper logs one per batch from its study."""

    # The report reads result.json files at the end: a launcher may end jobs without composing
    # them for this callback.
    wants_jobs = False

    def __init__(self, html: bool = False) -> None:
        self.html = html  # report.html too (`hydra.callbacks.report.html=true`)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        self._per_job = not sweeper.startswith("hydra_plugins.hpjax_sweeper.")
        self._start, self._done, self._best = time.perf_counter(), 0, None
        if sweeper.endswith("BasicSweeper"):  # hpjax's sweeper prints its own space
            try:
                log.info("%s", grid_space(config))
            except Exception:  # noqa: BLE001  (Hydra runs the sweep anyway; the line is a nicety)
                pass

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not getattr(self, "_per_job", False):  # a single run, or hpjax's sweeper
            return
        self._done += 1
        result = Result.read(config.hydra.runtime.output_dir)
        if result is not None and result.ok and (self._best is None or better(
                result.objective, self._best[0], result.objective_mode)):
            self._best = (result.objective, config.hydra.job.num, result.objective_metric)
        best = (f"best {self._best[2]} {self._best[0]:.4f} (trial {self._best[1]})"
                if self._best else "no finished trial yet")
        log.info("[sweep] %d trials done, %s, %.1f s elapsed", self._done, best,
                 time.perf_counter() - self._start)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        objectives = OmegaConf.select(config, "hydra.sweeper.objectives", default=None)
        objectives = parse_objectives(objectives) if objectives else None
        trials = read_trials(sweep_dir)
        try:
            best = report(sweep_dir, objectives, trials=trials)
            keep = OmegaConf.select(config, "hydra.sweeper.keep_params", default=None)
            if keep is not None:
                keep_params(sweep_dir, int(keep), objectives)
            html = html_enabled(getattr(self, "html", False)) and _write_html(sweep_dir,
                                                                               objectives)
        except OSError as e:  # a full or read-only disk: the trials' files are all there
            from hpjax.errors import DISK_FAULT, disk_fault, stop

            if disk_fault(e) is None:
                raise
            stop(f"{disk_fault(e)}: the sweep's report could not be written, every trial's "
                 f"files are kept; once there is room, python -m hpjax.report {sweep_dir} "
                 "writes it", DISK_FAULT)
        log.info("sweep results in %s: summary.csv%s%s, one directory per trial%s",
                 sweep_dir.resolve(), ", best.yaml" if best else "",
                 ", report.html" if html else "",
                 "" if html else f" (plots: python -m hpjax.report {sweep_dir})")
        from hpjax.errors import ALL_FAILED, Stop, stop, verdicts

        code, line = verdict(trials)
        if code and verdicts["exit"]:  # the `hpjax` command, hpjax.sweep (hpjax.errors)
            if code == ALL_FAILED:
                stop(line, code)
            print(f"hpjax: {line}", file=sys.stderr, flush=True)
            raise Stop(line, code)


def html_enabled(asked: bool = False) -> bool:
    """Whether a sweep writes `report.html` as it ends: as the config asks
    (`hydra.callbacks.report.html`, true in hpjax's config), or `HPJAX_REPORT_HTML=on`/`off`
    whatever the config says (a benchmark or a test that times or reads no report)."""
    env = os.environ.get("HPJAX_REPORT_HTML", "").lower()
    if env in ("on", "1", "true"):
        return True
    return asked and env not in ("off", "0", "false")


def _write_html(sweep_dir: Path, objectives: Optional[dict]) -> bool:
    from hpjax.report.html import ReportError, write_report

    try:
        write_report(sweep_dir, objectives)
    except ReportError as e:
        log.warning("no report.html: %s", e)
        return False
    return True


def main(argv: Optional[list] = None) -> int:
    """`python -m hpjax.report <sweep_dir>`: summary.csv, best.yaml, report.html and the table."""
    parser = argparse.ArgumentParser(
        prog="python -m hpjax.report", description="Rebuild a sweep's summary.csv, best.yaml, "
        "report.html and ranked table from its job directories.")
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (hydra.sweep.dir)")
    parser.add_argument("--no-html", action="store_true", help="skip report.html")
    args = parser.parse_args(argv)
    from hpjax.report.html import ReportError, check_sweep, sweep_objectives, write_report

    try:
        check_sweep(args.sweep_dir)
        objectives = sweep_objectives(args.sweep_dir)
        report(args.sweep_dir, objectives)
        if not args.no_html:
            print(f"wrote {write_report(args.sweep_dir, objectives)}")
    except ReportError as e:
        print(f"hpjax.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk: one line, as the sweep says it (exit 5)
        from hpjax.errors import DISK_FAULT, disk_fault

        if disk_fault(e) is None:
            raise
        print(f"hpjax.report: error: {disk_fault(e)}: free space (or make it writable) and run "
              "it again", file=sys.stderr)
        return DISK_FAULT
    return 0


if __name__ == "__main__":
    sys.exit(main())
