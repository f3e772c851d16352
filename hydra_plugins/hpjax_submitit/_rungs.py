"""A bracket trained rung by rung over several submitit jobs, its scheduler in the driver.

A scheduled batch whose trials train in several units (a bracket whose trials differ in a static
key, or outnumber a chunk) trains in rounds: each round submits one job per unit that has trials
going on. A job trains its trials until all of them wait for the scheduler (a rung that trials of
other jobs must reach too) or end; the waiting ones save a checkpoint and end there as the rung's
stop would end them (`hpjax.engine.train_jobs(suspend=True)`), and the job returns a `RungEnd`.
The driver's scheduler then holds what every job's copy heard, decides for the trials that wait
(`Scheduler.decide`): the ones it stops keep the returns of their round; the others go on in the
next round, each unit's in one job again, from their checkpoints. A rung all of whose trials train
in one job is decided in that job, which trains on.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

if TYPE_CHECKING:  # the launcher whose method this is (its module imports this one)
    from ._impl import HpjaxSubmititImpl, Unit

log = logging.getLogger(__name__)


@dataclass
class ByRung:
    """A bracket's scheduler as a job trained rung by rung receives it: the job trains its
    trials until they all wait for the scheduler, or end, and returns a `RungEnd`."""

    scheduler: Any


@dataclass
class RungEnd:
    """What a job trained rung by rung returns: its jobs' numbers and JobReturns (a trial that
    waits: the return a stop at the rung gives it, its files written), the numbers of those
    that wait (checkpoints saved), and the scheduler's state as the job left it."""

    jobs: list[int]
    returns: list[JobReturn]
    waiting: list[int]
    scheduler: dict


def checkpointed(overrides: list, cfg: Any) -> list:
    """A job's overrides, with `train.checkpoint_every=train.epochs` where it saves none: its
    trials then save a checkpoint where they wait for a rung (and no periodic one), and
    continue from it in the next round."""
    if cfg is None or cfg.train.checkpoint_every:
        return overrides
    return [o for o in overrides if not o.lstrip("+").startswith("train.checkpoint_every=")] \
        + [f"train.checkpoint_every={cfg.train.epochs}"]


def stopped(ret: JobReturn, reason: str) -> JobReturn:
    """The return of a trial the rung stopped, its result (the one its job wrote as it
    suspended the trial, in the return and in `result.json`) given the scheduler's reason."""
    import hpjax.engine

    output_dir = getattr(ret, "output_dir", None)  # the vmap launcher's light returns
    if output_dir is None and ret.hydra_cfg is not None:
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
    result = getattr(ret, "result", None) or (
        hpjax.engine.read_result(output_dir) if output_dir else None)
    if result is not None and result.stopped:
        result.stopped = {**result.stopped, "reason": reason}
        if output_dir:
            result.write(output_dir)
    return ret


def train_by_rung(launcher: "HpjaxSubmititImpl", executor: Any, units: "list[Unit]",
                  cfgs: dict[int, Any], state: dict, scheduler: Any,
                  on_result: Optional[Callable[[int, JobReturn], None]]) -> dict[int, JobReturn]:
    """Trains `units` (lists of (job number, overrides)) round by round, as the module says;
    `cfgs`: each job's config (None: a bad one, which fails in its job). Returns every job's
    JobReturn by job number; `on_result` hears each as its trial ends."""
    import hpjax.engine

    units = [[(n, checkpointed(o, cfgs.get(n))) for n, o in unit] for unit in units]
    for n, cfg in cfgs.items():
        if cfg is not None:
            scheduler.on_trial_add(n)
    returns: dict[int, JobReturn] = {}
    rounds = 0
    while units:
        rounds += 1
        log.info("round %d of the bracket: %d trials in %d submitit job%s", rounds,
                 sum(map(len, units)), len(units), "" if len(units) == 1 else "s")
        ends: list[RungEnd] = []
        jobs = launcher.submit(executor, units, state, ByRung(scheduler))
        got = launcher.wait(executor, units, jobs, state, ByRung(scheduler), on_result, ends)
        waiting: set[int] = set()
        for end in ends:  # what the jobs' copies of the scheduler heard
            scheduler.restore(end.scheduler)
            waiting.update(end.waiting)
        heard = {n for end in ends for n in end.jobs}
        for n, ret in got.items():
            if n not in waiting:
                returns[n] = ret
                if n not in heard and cfgs.get(n) is not None:  # its job gave no result
                    scheduler.on_trial_complete(n, None)
        going: set[int] = set()
        for n in sorted(waiting):
            decision = scheduler.decide(n)
            if decision == hpjax.engine.CONTINUE:
                going.add(n)
            elif isinstance(decision, hpjax.engine.Stop):
                log.debug("trial %d stopped: %s", n, decision.reason)
                scheduler.on_trial_complete(n, None)
                returns[n] = stopped(got[n], decision.reason)
                if on_result is not None:
                    on_result(n, got[n])
            else:
                raise RuntimeError(
                    f"the scheduler answered {decision} for trial {n}, which waits with every "
                    "trial of its batch that still trains: trained rung by rung, a waiting "
                    "trial takes Continue or Stop (hydra.launcher.by_rung=false trains the "
                    "batch as one job)")
        units = [kept for unit in units if (kept := [(n, o) for n, o in unit if n in going])]
    return returns


__all__ = ["ByRung", "RungEnd", "checkpointed", "stopped", "train_by_rung"]
