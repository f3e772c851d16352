"""A sweep's trials as read from their job directories, and their ranking by the objectives."""

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hpjax.results import Result

log = logging.getLogger("hpjax")

@dataclass
class Trial:
    job: int
    job_dir: Path
    overrides: list
    result: Optional[Result]  # None: no (readable) result.json

    @property
    def status(self) -> str:
        return self.result.status if self.result else "incomplete"

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def ended(self) -> str:
        """How the trial ended, as the table shows it: `ok`, `pruned at epoch 3`, ..."""
        if self.status == "pruned":
            return f"pruned at epoch {self.result.epochs_run}"
        if self.status == "diverged" and self.result.diverged_epoch is not None:
            return f"diverged at epoch {self.result.diverged_epoch}"
        return self.status

    def metric(self, name: str) -> Optional[float]:
        return self.result.metric(name) if self.result else None

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the result, `default` when there is none."""
        return getattr(self.result, name, default) if self.result else default

    @property
    def seconds(self) -> Optional[float]:
        return self.result.compile_time_s + self.result.train_time_s if self.result else None


def read_trials(sweep_dir: Path) -> list[Trial]:
    """One `Trial` per numbered job directory; one without `result.json` is `incomplete`."""
    trials = []
    with os.scandir(sweep_dir) as entries:
        jobs = sorted(int(e.name) for e in entries if e.name.isdigit() and e.is_dir())
    for job in jobs:
        job_dir = os.path.join(sweep_dir, str(job))
        overrides_file = os.path.join(job_dir, ".hydra", "overrides.yaml")
        try:
            overrides = _read_overrides(overrides_file)
        except FileNotFoundError:
            overrides = []
        except Exception as e:  # noqa: BLE001  (a torn file: this trial's problem only)
            log.warning("%s is unreadable (%s)", overrides_file, e)
            overrides = []
        trials.append(Trial(job, Path(job_dir), overrides, Result.read(job_dir)))
    return trials


# An override YAML reads back as the text it is: `key=value` of plain characters only.
_PLAIN_OVERRIDE = re.compile(r"- ([A-Za-z_][\w.\-]*=[\w./=,+\-]*)\Z", re.ASCII)


def _read_overrides(path: str | Path) -> list[str]:
    """A job's `.hydra/overrides.yaml`: a list of strings (a sweep's report reads thousands:
    plain `- key=value` lines are taken as they are, anything else is read as YAML)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    plain = [_PLAIN_OVERRIDE.match(line) for line in lines]
    if lines and all(plain) and text.endswith("\n"):
        return [m.group(1) for m in plain]
    import yaml

    return [str(o) for o in yaml.load(text, Loader=getattr(yaml, "CSafeLoader",
                                                           yaml.SafeLoader)) or []]


def objectives_of(trials: list[Trial], sweeper_objectives: Optional[dict] = None) -> dict:
    """{metric: "min"|"max"}: the sweeper's objectives, else the trials' own objective."""
    if sweeper_objectives:
        return dict(sweeper_objectives)
    for t in trials:
        if t.result is not None:
            return {t.result.objective_metric: t.result.objective_mode}
    return {"objective": "min"}


def _dominates(a: list, b: list) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def rank(trials: list[Trial], objectives: dict) -> tuple[list[Trial], set]:
    """Finished trials best first, then the rest; and the job numbers on the Pareto front.

    One objective: sorted by it. Several: the Pareto front first (sorted by the first objective),
    then the others by the first objective.
    """
    signs = [-1 if mode == "max" else 1 for mode in objectives.values()]
    scored = []
    for t in trials:
        values = [t.metric(m) for m in objectives]
        if t.ok and all(v is not None and math.isfinite(v) for v in values):
            scored.append((t, [s * v for s, v in zip(signs, values, strict=True)]))
    if len(signs) == 1:  # the front: the best value's trials (pairs would cost n squared)
        best = min((v[0] for _, v in scored), default=None)
        front = {t.job for t, v in scored if v[0] == best}
    else:
        front = {t.job for t, v in scored if not any(_dominates(w, v) for _, w in scored)}
    scored.sort(key=lambda tv: (tv[0].job not in front, tv[1][0], tv[0].job))
    ranked = [t for t, _ in scored]
    jobs = {t.job for t in ranked}
    return ranked + [t for t in trials if t.job not in jobs], front


def swept_keys(trials: list[Trial]) -> list[str]:
    """Override keys in order of first appearance (the summary's parameter columns)."""
    keys: dict[str, None] = {}
    for t in trials:
        for o in t.overrides:
            keys.setdefault(o.split("=", 1)[0], None)
    return list(keys)
