import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hpjax import search
from hpjax.report import result_metric
from hpjax.search import parse_objectives

log = logging.getLogger(__name__)

_MODES = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}
# Trials that ended with a result (diverged, failed on a bad value) count toward n_trials; a trial
# left RUNNING by a killed sweep does not, and is run again on resume.
_FINAL_FAIL = ("diverged", "failed")


def safe_url(url: str) -> str:
    """A storage URL with its password masked, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://")[0] + "://***" if "://" in url else url


class HpjaxSweeperImpl(Sweeper):
    def __init__(self, algorithm: str, n_trials: Optional[int], batch_size: int, seed: int,
                 params: Optional[dict], storage: Optional[str], study_name: str,
                 objectives: Optional[list], direction: Optional[str],
                 fail_stale_trials: bool) -> None:
        if algorithm not in search.ALGORITHMS:
            raise ValueError(f"hydra.sweeper.algorithm={algorithm!r}: must be one of "
                             f"{', '.join(search.ALGORITHMS)}")
        if n_trials is None and algorithm != "grid":
            raise ValueError(f"hydra.sweeper.n_trials=null is only allowed with algorithm=grid; "
                             f"set a number of trials for algorithm={algorithm}")
        if n_trials is not None and n_trials < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}: must be >= 1 (or null for grid)")
        if batch_size < 1:
            raise ValueError(f"hydra.sweeper.batch_size={batch_size}: must be >= 1")
        self.algorithm, self.n_trials, self.batch_size, self.seed = (
            algorithm, n_trials, batch_size, seed)
        self.params = dict(params or {})
        self.storage, self.study_name = storage, study_name
        self.objectives = parse_objectives(objectives or [])
        self.direction, self.fail_stale_trials = direction, fail_stale_trials
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the study -------------------------------------------------------------------------
    def _directions(self) -> tuple[list[str], list[str]]:
        """Objective names (empty: the task's return value) and Optuna directions."""
        if self.objectives:
            return list(self.objectives), [_MODES[v] for v in self.objectives.values()]
        mode = self.direction or OmegaConf.select(self.config, "objective.mode", default=None)
        if mode not in _MODES and mode is not None:
            raise ValueError(f"hydra.sweeper.direction={mode!r}: must be minimize or maximize")
        return [], [_MODES.get(mode, "minimize")]

    def _study(self, sweep_dir: Path, directions: list[str]) -> optuna.Study:
        url = self.storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
        sampler = search.make_sampler(self.algorithm, seed=self.seed,
                                      n_objectives=len(directions), batch_size=self.batch_size)
        study = optuna.create_study(storage=url, study_name=self.study_name, sampler=sampler,
                                    directions=directions, load_if_exists=True)
        if [d.name.lower() for d in study.directions] != directions:
            raise ValueError(f"study {self.study_name!r} in {safe_url(url)} optimises "
                             f"{[d.name.lower() for d in study.directions]}, this sweep "
                             f"{directions}: use another hydra.sweeper.study_name")
        log.info("study %r in %s (%s, %s)", self.study_name, safe_url(url), self.algorithm,
                 ", ".join(directions))
        return study

    def _fail_stale(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(t._trial_id, "status", "killed")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            log.warning("trial %d was left running by an earlier sweep: marked failed, it runs "
                        "again", t.number)

    @staticmethod
    def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        return [t for t in study.get_trials(deepcopy=False, states=states)
                if t.state == optuna.trial.TrialState.COMPLETE
                or t.user_attrs.get("status") in _FINAL_FAIL]

    def _enqueue_grid(self, study: optuna.Study, space: search.SearchSpace) -> int:
        points = space.grid()
        total = len(points) if self.n_trials is None else min(self.n_trials, len(points))
        key = lambda params: tuple(sorted(params.items()))
        taken = {key(t.params) for t in self._finished(study)}
        taken |= {key(t.system_attrs.get("fixed_params", {})) for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
        for point in points[:total]:
            if key(point) not in taken:
                study.enqueue_trial(point)
        return total

    # -- the sweep -------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = search.parse([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        names, directions = self._directions()
        study = self._study(sweep_dir, directions)
        if self.fail_stale_trials:
            self._fail_stale(study)
        if self.algorithm == "grid":
            total = self._enqueue_grid(study, space)
            distributions = space.grid_distributions
        else:
            total, distributions = self.n_trials, space.distributions
        finished = len(self._finished(study))
        if finished:
            log.info("resuming: %d of %d trials already finished", finished, total)

        returns: list[Sequence[JobReturn]] = []
        start = time.perf_counter()
        while finished < total:
            trials = [study.ask(distributions)
                      for _ in range(min(self.batch_size, total - finished))]
            batch = [space.overrides(t.params) for t in trials]
            self.validate_batch_is_legal(batch)
            results = self._launch(batch, [t.number for t in trials])
            for trial, ret in zip(trials, results, strict=True):
                self._tell(study, trial, ret, names)
            returns.append(results)
            finished += len(trials)
            log.info("[study] %d/%d trials finished, %s, %.1f s", finished, total,
                     self._best_line(study, names or [OmegaConf.select(
                         self.config, "objective.metric", default="objective")]),
                     time.perf_counter() - start)
        return returns

    def _launch(self, batch: list[list[str]], numbers: list[int]) -> list[JobReturn]:
        # Job directory = trial number, so a resumed sweep never overwrites an earlier trial's.
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        return [r for overrides, n in zip(batch, numbers, strict=True)
                for r in self.launcher.launch([overrides], initial_job_idx=n)]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn,
              names: list[str]) -> None:
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") \
            if ret.hydra_cfg is not None else None
        if output_dir:
            trial.set_user_attr("job_dir", str(output_dir))
        if ret.status != JobStatus.COMPLETED:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("error", repr(ret._return_value)[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %r", trial.number, ret._return_value)
            return
        result_file = Path(output_dir) / "result.json" if output_dir else None
        if result_file is not None and result_file.exists():
            result = json.loads(result_file.read_text())
            status = result.get("status", "ok")
            values = ([result_metric(result, n) for n in names] if names
                      else [result.get("objective")])
        else:  # a task function of its own: its return value is the objective
            value = ret.return_value
            status = "ok"
            values = list(value) if isinstance(value, (list, tuple)) else [value]
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if status == "ok" and finite and len(values) == len(study.directions):
            trial.set_user_attr("status", "ok")
            study.tell(trial, [float(v) for v in values])
        else:
            trial.set_user_attr("status", status if status != "ok" else "failed")
            if status == "ok":
                trial.set_user_attr("error", f"objective values {values} are not finite numbers")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    @staticmethod
    def _best_line(study: optuna.Study, names: list[str]) -> str:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            return "no finished trial yet"
        if len(study.directions) > 1:
            return f"Pareto front of {', '.join(names)}: {len(study.best_trials)} trials"
        best = study.best_trial
        return f"best {names[0]} {best.value:.4f} (trial {best.number})"

