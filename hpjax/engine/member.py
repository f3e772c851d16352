"""What the host knows of each member of a population while it trains: its best epoch and
early stopping, its rows, status and record for resuming, the sweep's schedule of its values,
and the population's progress line."""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hpjax.config import Config, EarlyStoppingConfig
from hpjax.engine.progress import EpochReport
from hpjax.engine.schedulers import pbt as pbt_lib
from hpjax.results import Outcome, Result, better


@dataclass
class BestEpoch:
    """Tracks the best epoch by the monitored metric and counts the patience of early stopping,
    as Keras' `EarlyStopping(restore_best_weights=True)` does."""

    cfg: EarlyStoppingConfig
    epoch: Optional[int] = None
    row: dict = field(default_factory=dict)

    def update(self, epoch: int, row: dict) -> bool:
        """Records `epoch` if it improved on the best; returns True when training should stop."""
        c = self.cfg
        value = row[c.monitor]
        delta = c.min_delta if c.mode == "max" else -c.min_delta
        if self.epoch is None or better(value, self.row[c.monitor] + delta, c.mode):
            self.epoch, self.row = epoch, row
            return False
        return c.patience is not None and epoch - self.epoch >= c.patience


@dataclass
class Member:
    """What the host knows of one member while it trains."""

    cfg: Config
    outcome: Outcome
    tracker: BestEpoch
    checkpoint_dir: Optional[str] = None
    params_path: Optional[str] = None  # where its best epoch's variables go (train.save_params)
    active: bool = True
    train_s: float = 0.0  # its share of the population's time in the epoch program
    slot: Optional[int] = None  # its place on the member axis; None once compacted away
    test: Optional[dict] = None  # its test metrics, taken when it left the population
    host: dict = field(default_factory=dict)  # its host metrics: {"val/f1_macro": ..., "test/..."}
    offset: int = 0  # the population's epochs before it joined (a refilled slot)
    pruned_at: Optional[int] = None  # the epoch the sweep's schedule stopped it
    gone: bool = False  # it left the population in an earlier run (restored from its record)
    origin: str = ""  # its config as it started (PBT and train.hparam_schedule change `cfg`)
    trial: Any = None  # the trial it belongs to, as the scheduler names it
    # PBT's record: the exploits it inherited, the values it trained with, its first ancestor
    lineage: Optional[list] = None
    schedule: Optional[list] = None
    root: Any = None

    @property
    def result(self) -> Result:
        return self.outcome.result

    def meta(self) -> dict:
        """What the host loop knows of the member, to continue it from a checkpoint."""
        r = self.result
        return {"config": self.origin or repr(self.cfg), "values": pbt_lib.traced_values(self.cfg),
                "pbt": pbt_lib.record(self), "rows": self.outcome.rows, "active": self.active,
                "train_s": self.train_s, "status": r.status, "diverged_epoch": r.diverged_epoch,
                "stopped_early": r.stopped_early, "best_epoch": self.tracker.epoch,
                "best_row": self.tracker.row, "pruned_at": self.pruned_at, "test": self.test,
                "host": self.host, "stopped": r.stopped}

    def restore(self, meta: dict, epoch: int) -> None:
        r = self.result
        self.outcome.rows = meta["rows"]
        r.status, r.diverged_epoch, r.stopped_early = (meta["status"], meta["diverged_epoch"],
                                                       meta["stopped_early"])
        r.epochs_run, r.resumed_from_epoch = len(self.outcome.rows), epoch
        self.tracker.epoch, self.tracker.row = meta["best_epoch"], meta["best_row"]
        self.active, self.train_s = meta["active"], meta["train_s"]
        self.pruned_at, r.stopped = meta.get("pruned_at"), meta.get("stopped")
        if meta.get("pbt"):
            self.lineage, self.schedule, self.root = (meta["pbt"]["lineage"],
                                                      meta["pbt"]["schedule"],
                                                      meta["pbt"]["root"])
        if meta.get("left"):  # it had left the population: its test metrics were taken then
            self.gone, self.test, self.host = True, meta["test"], meta.get("host", {})

    def record(self, epoch: int, row: dict, finite: bool) -> bool:
        """Takes one epoch's metrics; returns whether this epoch is the member's best so far."""
        self.outcome.rows.append(row)
        self.result.epochs_run = epoch
        if not (finite and math.isfinite(row["val/loss"])):
            self.result.status, self.result.diverged_epoch = "diverged", epoch
            self.active = False
            return False
        if self.tracker.update(epoch, row):
            self.result.stopped_early, self.active = True, False
        return self.tracker.epoch == epoch

    def prune(self, epoch: int, reason: str) -> None:
        """Stopped by the sweep's scheduler (successive halving, a pruner) after `epoch`, for
        `reason` (its `Stop`'s, kept in result.json)."""
        if self.result.status == "ok":
            self.result.status = "pruned"
        self.result.stopped = {"epoch": epoch, "reason": reason}
        self.active, self.pruned_at = False, epoch

    def saves_at(self, epoch: int, now: bool = False) -> bool:
        """Whether the member saves at this epoch: every `checkpoint_every` epochs, or `now`
        (a signal stops the sweep) when it saves at all."""
        every = self.cfg.train.checkpoint_every
        return bool(self.checkpoint_dir and every and (now or epoch % every == 0)
                    and epoch < self.cfg.train.epochs)


def scheduled(cfg: Config, epoch: int) -> dict:
    """The values `train.hparam_schedule` sets from `epoch` on (`"5: optimizer.lr=0.01"`)."""
    values = {}
    for entry in cfg.train.hparam_schedule:
        at, _, overrides = str(entry).partition(":")
        if int(at) == epoch:
            for item in overrides.split():
                key, _, value = item.partition("=")
                values[key] = float(value)
    return values


def epoch_report(epoch: int, members: list[Member]) -> EpochReport:
    """Progress by the first member's objective, among the members that share it."""
    objective = members[0].cfg.objective
    metric, mode = objective.metric, objective.mode
    if metric not in members[0].cfg.task.metrics():  # a host metric: known once training ends
        metric, mode = (members[0].cfg.train.early_stopping.monitor,
                        members[0].cfg.train.early_stopping.mode)
    scores = [(m.tracker.row[metric], i) for i, m in enumerate(members)
              if m.cfg.objective == objective and m.tracker.epoch is not None
              and m.result.status == "ok"]
    best = (max if mode == "max" else min)(scores) if scores else (None, None)
    return EpochReport(epoch, members[0].cfg.train.epochs, sum(m.active for m in members),
                       len(members), metric, *best)
