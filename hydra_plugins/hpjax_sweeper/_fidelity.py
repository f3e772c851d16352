"""Multi-fidelity search in the sweeper: successive halving and Hyperband brackets, Optuna's
pruners and PBT, each a scheduler (`hpjax.engine.schedulers`) handed to the launcher with the
batch (`PopulationLauncher.run_populations`).

A bracket's configurations come from the sweeper's sampler and are launched as one batch; the
launcher trains them as populations and, after every epoch, asks the scheduler built here: it
reports each trial's objective to Optuna (`trial.report`, the learning curve in the study) and
says which trials stop there (the bracket's rung rule, over the whole bracket, or the study's
pruner). A stopped trial is told to Optuna as PRUNED; its `result.json` says `status: pruned`.
"""

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Protocol

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict

import hpjax.engine
from hpjax.engine import PBT, PBTBounds, PopulationLauncher, StudyTrials, SuccessiveHalving

from . import _batch, _checks, _search

log = logging.getLogger(__name__)


class Sweep(Protocol):
    """What the multi-fidelity code may use of the sweeper (`_impl.HpjaxSweeperImpl`): its
    settings, and the study work it shares with the plain sweep."""

    launcher: Any  # Hydra's launcher (a `PopulationLauncher` for these algorithms)
    algorithm: str
    n_trials: Optional[int]
    eta: int
    min_epochs: int
    seed: Optional[int]
    pbt: dict  # interval, fraction, resample_probability

    def lock(self, sweep_dir: Path) -> contextlib.AbstractContextManager[None]:
        """One worker at a time on the study."""

    def ask(self, study: optuna.Study, sweep_dir: Path, space: _search.SearchSpace,
            distributions: dict, n: int) -> list[optuna.Trial]:
        """`n` new trials with their job directories (and first heartbeats)."""

    def tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> None:
        """Tells the study one job's `JobReturn`."""

    def run_batch(self, study: optuna.Study, trials: list, space: _search.SearchSpace,
                  scheduler: Optional[hpjax.engine.Scheduler] = None,
                  on_result: Optional["TellAsTheyEnd"] = None) -> list:
        """Launches the trials, driven by `scheduler`, and tells their results."""

    def finished(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The trials that count toward n_trials."""

    def job_dir(self, sweep_dir: Path) -> Optional[Callable[[int], Path]]:
        """Trial number -> its job directory (None: a `hydra.sweep.subdir` of the user's)."""

    def compose(self, overrides: list[str]) -> DictConfig:
        """A job's config as the launcher will compose it."""

BRACKETS = ("sha", "hyperband")
OWN_SAMPLER = (*BRACKETS, "pbt")  # algorithms whose configurations come from `sampler`
PRUNERS = ("none", "asha", "sha", "hyperband", "median")


def population_launcher(launcher: Any, why: str, live: bool = False) -> Any:
    """The launcher as a `PopulationLauncher` that trains populations now: vmap, or hpjax_slurm
    (and hpjax_submitit_local) with vectorize=true unless `live` (the scheduler reports to the
    study every epoch, in this process); else a clear error."""
    ok = isinstance(launcher, PopulationLauncher) and launcher.populations and (
        launcher.in_process or not live)
    if not ok:
        raise ValueError(f"{why} trains its trials inside populations and needs "
                         "hydra/launcher=vmap (the default)" + (
                             "" if live else " or hpjax_slurm with vectorize=true")
                         + f"; got {type(launcher).__name__}")
    return launcher


def max_epochs(sweeper: Sweep, space: _search.SearchSpace) -> int:
    """train.epochs, the maximum resource R, as the jobs will compose it; checked against
    eta and min_epochs."""
    if any(p.key == "train.epochs" for p in space.params):
        raise ValueError("train.epochs is the maximum resource R of multi-fidelity search and "
                         "cannot be searched: give it one value (train.epochs=27)")
    cfg = sweeper.compose([item for item in space.items if isinstance(item, str)])
    top = int(OmegaConf.select(cfg, "train.epochs"))
    hpjax.engine.check_fidelity(sweeper.eta, sweeper.min_epochs, top)
    return top


def make_pruner(pruner: Any, *, eta: int, min_epochs: int, max_epochs: int) -> Any:
    """`hydra.sweeper.pruner` as an Optuna pruner (None: none)."""
    if pruner is None or pruner == "none":
        return None
    if isinstance(pruner, optuna.pruners.BasePruner):  # Hydra instantiated the _target_ node
        return pruner
    if isinstance(pruner, (dict, DictConfig)):
        from hydra.utils import instantiate

        return instantiate(pruner)
    if pruner in ("asha", "sha"):
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs,
                                                      reduction_factor=eta)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max_epochs,
                                              reduction_factor=eta)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs)
    raise ValueError(f"hydra.sweeper.pruner={pruner!r}: must be one of {', '.join(PRUNERS)}, "
                     "or a node with the _target_ of an Optuna pruner")


def check(algorithm: str, pruner: Any, eta: int, min_epochs: int) -> None:
    """What can be checked before the config is composed."""
    if algorithm == "grid" and pruner not in (None, "none"):
        raise ValueError(f"hydra.sweeper.pruner={pruner}: a grid runs every point to the end; "
                         "use a sampler (random, tpe, ...) with a pruner")
    if algorithm in BRACKETS and pruner not in (None, "none"):
        raise ValueError(f"algorithm={algorithm} stops trials by its own brackets; set "
                         "hydra.sweeper.pruner=none, or prune with another algorithm")
    if eta < 2:
        raise ValueError(f"hydra.sweeper.eta={eta}: must be an integer >= 2 (the fraction 1/eta "
                         "of a rung's trials go on to the next rung; 3 is usual)")
    if min_epochs < 1:
        raise ValueError(f"hydra.sweeper.min_epochs={min_epochs}: must be >= 1")


def pruning(sweeper: Sweep, study: optuna.Study, sweep_dir: Path,
            space: _search.SearchSpace, total: int, distributions: dict,
            trials: list) -> tuple[StudyTrials, "TellAsTheyEnd"]:
    """For one batch under a pruner: the scheduler that reports each epoch's objective to the
    study and prunes where its pruner says, and gives a slot freed by a pruned or ended trial a
    new trial asked from the sampler, until the study has `total` (finished, running here or in
    other workers); and `on_result`, which tells a trial as soon as its job ends (the sampler
    learns). New trials are appended to `trials` (which the batch tells); the numbers told
    are in `on_result.told`."""
    def ask(n: int) -> list[tuple[int, tuple[int, list[str]]]]:
        with sweeper.lock(sweep_dir):
            finished, running = _batch.count(study)
            room = min(n, total - finished - running)
            if room <= 0:
                return []
            new = sweeper.ask(study, sweep_dir, space, distributions, room)
        trials.extend(new)
        scheduler.trials.update({t.number: t for t in new})
        return [(t.number, (t.number, space.overrides(t.params))) for t in new]

    scheduler = StudyTrials({t.number: t for t in trials}, prune=True, ask=ask,
                            pruner=f"Optuna's {type(study.pruner).__name__}")
    return scheduler, TellAsTheyEnd(sweeper, study, trials)


class TellAsTheyEnd:
    """A batch's `on_result(job number, JobReturn)`: tells each trial as soon as its job ends
    (the sampler and the pruner learn from it); `told`: the numbers told so, which the batch's
    end does not tell again."""

    def __init__(self, sweeper: Sweep, study: optuna.Study, trials: list) -> None:
        self.sweeper, self.study, self.trials = sweeper, study, trials  # (trials grows)
        self.told: set[int] = set()

    def __call__(self, number: int, ret: Any) -> None:
        trial = next(t for t in self.trials if t.number == number)
        try:
            with _batch.transaction(self.study):
                self.sweeper.tell(self.study, trial, ret)
        except Exception as e:  # noqa: BLE001  (told again when the batch ends)
            log.warning("trial %d: its result is told when the batch ends (%s)", number, e)
            return
        self.told.add(number)


def bracket_plan(sweeper: Sweep, space: _search.SearchSpace) -> tuple[int, list, int]:
    """(R, the brackets, the trials they take): `n_trials`, or null: eta^s_max for sha, one
    pass of the brackets for hyperband."""
    top = max_epochs(sweeper, space)
    if sweeper.algorithm == "sha":
        brackets = [hpjax.engine.successive_halving(top, sweeper.eta, sweeper.min_epochs,
                                                       sweeper.n_trials)]
    else:
        brackets = hpjax.engine.hyperband(top, sweeper.eta, sweeper.min_epochs)
    return top, brackets, sweeper.n_trials or sum(b[0].n for b in brackets)


def sweep_brackets(sweeper: Sweep, study: optuna.Study, sweep_dir: Path,
                   space: _search.SearchSpace, names: list[str], mode: str) -> list:
    """Successive halving (one bracket) or Hyperband (its brackets, s_max down to 0, again
    until `n_trials`): each bracket one batch, its configurations from the sampler."""
    launcher = population_launcher(sweeper.launcher, f"algorithm={sweeper.algorithm}")
    top, brackets, total = bracket_plan(sweeper, space)
    log.info("%s: R = %d epochs, eta = %d: brackets %s", sweeper.algorithm, top, sweeper.eta,
             "; ".join(hpjax.engine.bracket_table(brackets)))
    returns, started = [], 0
    k = 0
    while started < total:
        rungs = brackets[k % len(brackets)]
        n = min(rungs[0].n, total - started)
        if n < rungs[0].n:  # the last bracket, cut to n_trials
            rungs = hpjax.engine.bracket(n, len(rungs) - 1, top, sweeper.eta)
        done = [t for t in sweeper.finished(study) if t.user_attrs.get("bracket") == k]
        if len(done) < n:
            with sweeper.lock(sweep_dir):
                _checks.refuse_foreign(study, space.distributions)  # (values are data)
                trials = [space.ask(study, space.distributions) for _ in range(n)]
                job_dir = sweeper.job_dir(sweep_dir)
                for t in trials:
                    t.set_user_attr("bracket", k)
                    if job_dir is not None:
                        t.set_user_attr("job_dir", str(job_dir(t.number)))
            label = f"[bracket {k + 1}: {hpjax.engine.bracket_table([rungs])[0]}]"
            log.info("%s %d trials from %d epochs", label, n, rungs[0].epochs)
            # The bracket's rule over all its trials, whatever population each trains in. In
            # this process every epoch is reported to the study too; under hpjax_slurm the rule
            # runs alone, in the SLURM jobs and in the driver between rungs (the sweeper records
            # the learning curves from metrics.jsonl).
            rule = SuccessiveHalving([r.epochs for r in rungs], sweeper.eta, mode, label=label)
            scheduler = StudyTrials({t.number: t for t in trials}, rule) \
                if launcher.in_process else rule
            returns.append(sweeper.run_batch(study, trials, space, scheduler))
        started += n
        k += 1
    return returns


def sweep_pbt(sweeper: Sweep, study: optuna.Study, sweep_dir: Path,
              space: _search.SearchSpace, mode: str) -> list:
    """Population-based training: n_trials configurations from the sampler, trained as one
    population that exploits and explores every `pbt.interval` epochs."""
    population_launcher(sweeper.launcher, "algorithm=pbt")
    opts = sweeper.pbt
    if not 0 < opts["fraction"] <= 0.5:
        raise ValueError(f"hydra.sweeper.pbt.fraction={opts['fraction']}: must be in (0, 0.5] "
                         "(the bottom fraction copies the top fraction)")
    if opts["interval"] < 1:
        raise ValueError(f"hydra.sweeper.pbt.interval={opts['interval']}: must be >= 1 epoch")
    bounds = {}
    for p in space.params:
        d = p.distribution
        if not isinstance(d, optuna.distributions.FloatDistribution):
            raise ValueError(f"algorithm=pbt: {p.key} must be searched as an interval of floats "
                             "(interval(...) or tag(log, interval(...))): PBT multiplies values "
                             "by 0.8 or 1.2 and resamples them from their range")
        bounds[p.key] = PBTBounds(d.low, d.high, d.log)
    cfg = sweeper.compose([item for item in space.items if isinstance(item, str)])
    with open_dict(cfg):
        del cfg["hydra"]
    hpjax.engine.check_pbt_keys(hpjax.validate(cfg), list(bounds))
    n = sweeper.n_trials
    if len(sweeper.finished(study)) >= n:
        return []
    with sweeper.lock(sweep_dir):
        _checks.refuse_foreign(study, space.distributions)  # (values are data)
        trials = [space.ask(study, space.distributions) for _ in range(n)]
        job_dir = sweeper.job_dir(sweep_dir)
        for t in trials:
            if job_dir is not None:
                t.set_user_attr("job_dir", str(job_dir(t.number)))
    log.info("pbt: a population of %d, every %d epochs the bottom %g copy the top %g and "
             "explore %s", n, opts["interval"], opts["fraction"], opts["fraction"],
             ", ".join(bounds))
    explorer = PBT(bounds, interval=opts["interval"], fraction=opts["fraction"],
                   resample_probability=opts["resample_probability"], seed=sweeper.seed or 0,
                   mode=mode)
    returns = [sweeper.run_batch(study, trials, space, explorer)]
    log.info("pbt: %d exploits", len(explorer.copies))
    return returns


__all__ = ["BRACKETS", "OWN_SAMPLER", "PRUNERS", "Sweep", "TellAsTheyEnd", "bracket_plan",
           "check", "make_pruner", "max_epochs", "population_launcher", "pruning",
           "sweep_brackets", "sweep_pbt"]
