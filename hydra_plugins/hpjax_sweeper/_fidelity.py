"""Multi-fidelity search in the sweeper: successive halving and Hyperband brackets, and Optuna's
pruners, applied epoch by epoch inside the vmap launcher's populations.

A bracket's configurations come from the sweeper's sampler and are launched as one batch; the
launcher trains them as a population and, after every epoch, calls a stopper built here: it
reports each trial's objective to Optuna (`trial.report`, the learning curve in the study) and
says which trials stop there (the bracket's rung rule, or the study's pruner). A stopped trial is
told to Optuna as PRUNED; its `result.json` says `status: pruned`.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict

import hpjax.engine

from . import _batch, _checks, _search

log = logging.getLogger(__name__)

BRACKETS = ("sha", "hyperband")
OWN_SAMPLER = (*BRACKETS, "pbt")  # algorithms whose configurations come from `sampler`
PRUNERS = ("none", "asha", "sha", "hyperband", "median")


def population_launcher(launcher: Any, why: str, live: bool = False) -> Any:
    """The launcher's population engine, which takes stoppers: vmap, or hpjax_slurm (and
    hpjax_submitit_local) with vectorize=true unless `live` (the study is asked every epoch);
    else a clear error."""
    impl = getattr(launcher, "impl", None)
    ok = impl is not None and hasattr(impl, "stoppers") and (
        getattr(impl, "in_process", False) or (not live and getattr(impl, "vectorize", False)))
    if not ok:
        raise ValueError(f"{why} trains its trials inside populations and needs "
                         "hydra/launcher=vmap (the default)" + (
                             "" if live else " or hpjax_slurm with vectorize=true")
                         + f"; got {type(launcher).__name__}")
    return impl


def max_epochs(sweeper: Any, space: _search.SearchSpace) -> int:
    """train.epochs, the maximum resource R, as the jobs will compose it; checked against
    eta and min_epochs."""
    if any(p.key == "train.epochs" for p in space.params):
        raise ValueError("train.epochs is the maximum resource R of multi-fidelity search and "
                         "cannot be searched: give it one value (train.epochs=27)")
    fixed = [item for item in space.items if isinstance(item, str)]
    cfg = sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, fixed)
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


class Stoppers:
    """For one launched batch: given the batch positions of a population's jobs, the stopper
    that reports their objectives to Optuna and prunes them (a bracket's rule, a pruner)."""

    def __init__(self, trials: list, rungs: Optional[list[int]] = None, eta: int = 3,
                 mode: str = "max", prune: bool = False, label: str = "") -> None:
        self.trials, self.rungs, self.eta, self.mode = trials, rungs, eta, mode
        self.prune, self.label = prune, label
        self.rules: list[hpjax.engine.SuccessiveHalving] = []

    def __call__(self, ids: list[int]) -> Any:
        """`ids` grows as a refilled population takes new trials (`self.trials` grows too)."""
        rule = hpjax.engine.SuccessiveHalving(self.rungs, self.eta, self.mode) if self.rungs \
            else None
        if rule is not None:
            self.rules.append(rule)

        def stop(epoch: int, scores: list, values: list, running: list,
                 epochs: Optional[list] = None) -> set[int]:
            trials = [self.trials[i] for i in ids]
            for i, (trial, value) in enumerate(zip(trials, values, strict=True)):
                if value is not None:  # it trained this epoch
                    trial.report(value, epochs[i] if epochs else epoch)
            pruned: set[int] = set()
            if rule is not None:
                pruned = rule(epoch, scores, values, running, epochs)
                if rule.promoted and rule.promoted[-1][0] == epoch:
                    _, n, kept = rule.promoted[-1]
                    log.info("%s rung %d (epoch %d): %d trials, %d promoted", self.label,
                             len(rule.promoted), epoch, n, kept)
            if self.prune:
                pruned |= {i for i, t in enumerate(trials) if running[i] and i not in pruned
                           and values[i] is not None and t.should_prune()}
            return pruned

        if rule is not None:
            stop.resume, stop.rule = rule.resume, rule
        return stop


def refills(sweeper: Any) -> bool:
    """Whether the launcher takes new trials into the slots of pruned ones (a pruner, the vmap
    launcher, hpjax's task)."""
    impl = getattr(sweeper.launcher, "impl", None)
    return getattr(impl, "refill", None) is not None


@contextmanager
def refilling(sweeper: Any, stoppers: Optional[Stoppers], study: optuna.Study, sweep_dir: Path,
              space: _search.SearchSpace, total: int, distributions: dict,
              trials: list) -> Iterator[None]:
    """With a pruner, while a batch runs: a slot freed by a pruned or ended trial takes a new
    trial asked from the sampler, until the study has `total` (finished, running here or in
    other workers). The new trials are appended to `trials` (which the batch tells, and whose
    stoppers report them)."""
    impl = getattr(sweeper.launcher, "impl", None)
    if stoppers is None or not hpjax.engine.is_task(getattr(impl, "task_function", None)):
        yield
        return

    def refill(n: int) -> list[tuple[int, list[str]]]:
        with sweeper._lock(sweep_dir):
            finished, running = _batch.count(study)
            room = min(n, total - finished - running)
            if room <= 0:
                return []
            new = sweeper._ask(study, sweep_dir, space, distributions, room)
        trials.extend(new)
        return [(t.number, space.overrides(t.params)) for t in new]

    told: set[int] = set()

    def tell(number: int, ret: Any) -> None:  # as soon as the job ends: the sampler learns
        trial = next(t for t in trials if t.number == number)
        try:
            with _batch.transaction(study):
                sweeper._tell(study, trial, ret)
        except Exception as e:  # noqa: BLE001  (told again when the batch ends)
            log.warning("trial %d: its result is told when the batch ends (%s)", number, e)
            return
        told.add(number)

    impl.refill, impl.on_return, sweeper._told = refill, tell, told
    try:
        yield
    finally:
        impl.refill, impl.on_return, sweeper._told = None, None, set()


def bracket_plan(sweeper: Any, space: _search.SearchSpace) -> tuple[int, list, int]:
    """(R, the brackets, the trials they take): `n_trials`, or null: eta^s_max for sha, one
    pass of the brackets for hyperband."""
    top = max_epochs(sweeper, space)
    if sweeper.algorithm == "sha":
        brackets = [hpjax.engine.successive_halving(top, sweeper.eta, sweeper.min_epochs,
                                                       sweeper.n_trials)]
    else:
        brackets = hpjax.engine.hyperband(top, sweeper.eta, sweeper.min_epochs)
    return top, brackets, sweeper.n_trials or sum(b[0].n for b in brackets)


def sweep_brackets(sweeper: Any, study: optuna.Study, sweep_dir: Path,
                   space: _search.SearchSpace, names: list[str], mode: str) -> list:
    """Successive halving (one bracket) or Hyperband (its brackets, s_max down to 0, again
    until `n_trials`): each bracket one batch, its configurations from the sampler."""
    impl = population_launcher(sweeper.launcher, f"algorithm={sweeper.algorithm}")
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
        done = [t for t in sweeper._finished(study) if t.user_attrs.get("bracket") == k]
        if len(done) < n:
            with sweeper._lock(sweep_dir):
                _checks.refuse_foreign(study, space.distributions)  # (values are data)
                trials = [space.ask(study, space.distributions) for _ in range(n)]
                job_dir = sweeper._job_dir(sweep_dir)
                for t in trials:
                    t.set_user_attr("bracket", k)
                    if job_dir is not None:
                        t.set_user_attr("job_dir", str(job_dir(t.number)))
            label = f"[bracket {k + 1}: {hpjax.engine.bracket_table([rungs])[0]}]"
            log.info("%s %d trials from %d epochs", label, n, rungs[0].epochs)
            epochs = [r.epochs for r in rungs]
            # In this process: report every epoch to the study; in a SLURM job: the rule alone
            # (the sweeper records the learning curves from metrics.jsonl when it tells)
            impl.stoppers = Stoppers(trials, epochs, sweeper.eta, mode, label=label) \
                if getattr(impl, "in_process", False) else hpjax.engine.HalvingStoppers(
                    tuple(epochs), sweeper.eta, mode)
            try:
                returns.append(sweeper._run_batch(study, trials, space))
            finally:
                impl.stoppers = None
        started += n
        k += 1
    return returns


def sweep_pbt(sweeper: Any, study: optuna.Study, sweep_dir: Path,
              space: _search.SearchSpace) -> list:
    """Population-based training: n_trials configurations from the sampler, trained as one
    population that exploits and explores every `pbt.interval` epochs."""
    impl = population_launcher(sweeper.launcher, "algorithm=pbt")
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
        bounds[p.key] = hpjax.engine.PBTBounds(d.low, d.high, d.log)
    fixed = [item for item in space.items if isinstance(item, str)]
    cfg = sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, fixed)
    with open_dict(cfg):
        del cfg["hydra"]
    hpjax.engine.check_pbt_keys(hpjax.validate(cfg), list(bounds))
    n = sweeper.n_trials
    if len(sweeper._finished(study)) >= n:
        return []
    with sweeper._lock(sweep_dir):
        _checks.refuse_foreign(study, space.distributions)  # (values are data)
        trials = [space.ask(study, space.distributions) for _ in range(n)]
        job_dir = sweeper._job_dir(sweep_dir)
        for t in trials:
            if job_dir is not None:
                t.set_user_attr("job_dir", str(job_dir(t.number)))
    log.info("pbt: a population of %d, every %d epochs the bottom %g copy the top %g and "
             "explore %s", n, opts["interval"], opts["fraction"], opts["fraction"],
             ", ".join(bounds))
    explorer = hpjax.engine.PBT(bounds, interval=opts["interval"], fraction=opts["fraction"],
                                resample_probability=opts["resample_probability"],
                                seed=sweeper.seed or 0)
    impl.stoppers = hpjax.engine.SameStopper(explorer)
    try:
        returns = [sweeper._run_batch(study, trials, space)]
    finally:
        impl.stoppers = None
    log.info("pbt: %d exploits", len(explorer.copies))
    return returns


__all__ = ["BRACKETS", "OWN_SAMPLER", "PRUNERS", "Stoppers", "bracket_plan", "check",
           "make_pruner", "max_epochs", "population_launcher", "refilling", "refills",
           "sweep_brackets", "sweep_pbt"]
