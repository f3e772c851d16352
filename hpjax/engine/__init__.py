"""hpjax's plugin API: what Hydra plugins (hpjax's own in `hydra_plugins/hpjax_*`, and third
parties') build on. Users call `hpjax` (`compose`, `train`, `sweep`, `load`, ...); a plugin calls
`hpjax` and `hpjax.engine` and nothing else of hpjax (`tests/test_exports.py` parses the plugins'
imports to hold ours to it). docs/plugins.md is the guide.

Batches of jobs (the launcher's side):
- `Job`: one job of a launcher's batch: its validated config, output directory and task end.
- `JobEnd`: a job's task function under Hydra: writes `metrics.jsonl` and `result.json`, returns
  the objective.
- `plan`: a batch's configs -> populations and chunks (one compiled program each), with the memory
  estimate.
- `train_jobs`: trains a batch of `Job`s as populations; every job ends through its `JobEnd`.
- `run`: trains one config into a job directory and returns its `Result` (no Hydra).
- `is_task`: whether a task function is hpjax's (only those train as populations).
- `background_writes`: a context in which result files are written by a background thread, all
  flushed at its end.
- `SweepProgress`: where populations report each epoch: a live display on a terminal, else a line
  per population's end and the epochs in a log file (`log_file`).

Results (the sweeper's side):
- `read_result`: a job directory -> its `Result`, or None when the job wrote none.
- `parse_objectives`: `["val/loss:min", ...]` -> `{metric: mode}`, checked.
- `worst_objective`: the value a failed trial gets for a mode (`inf` for min, `-inf` for max).

The seams (docs/architecture.md#the-engines-seams):
- `PopulationLauncher`: what a sweeper may call on a launcher: `run_populations(jobs, scheduler,
  on_result)`, with `populations` (whether it trains populations now), `in_process` and
  `composes_batch_first`.
- `composes_batch_first`: whether a launcher composes a batch's jobs before any runs (a
  `PopulationLauncher` says; Hydra's own launchers do not: the sweeper checks the batch).
- `Scheduler`: what the epoch loop asks about each trial after every epoch (on the anchor of Ray
  Tune's `TrialScheduler`): `on_trial_add`, `on_trial_result` -> a decision, `decide` (a paused
  trial, again), `on_trial_complete`, `refill`, `save`/`restore`.
- `TrialResult`: a trial's epoch as the loop reports it (epoch, value, score, last, values).
- The decisions: `CONTINUE`, `PAUSE`, `Stop` (pruned, with its reason), `Exploit` (PBT's copy
  of a donor trial, with new values); `Decision`, their union.
- `FullTraining`: every trial to its end (the default; subclass it for a scheduler of your own).
- `StudyTrials`: an Optuna study's trials as a scheduler: each epoch reported, its pruner asked,
  another scheduler's decisions passed on, free slots refilled from the sampler.

Multi-fidelity and population-based training (each a `Scheduler`):
- `hyperband`, `successive_halving`: the brackets (lists of rungs: trials and epochs).
- `bracket`: one bracket of `n` trials and `s` halvings.
- `bracket_table`: brackets -> the printable table of trials and epochs per rung.
- `check_fidelity`: checks `eta`, `min_epochs` and `max_epochs` together.
- `SuccessiveHalving`: a bracket's rule over all its trials, whatever population each trains
  in: at each rung's epoch it waits for the whole rung, then promotes the top 1/eta.
- `PBT`: population-based training's exploit and explore at its interval.
- `PBTBounds`: the bounds PBT's perturbations stay within.
- `check_pbt_keys`: checks that PBT's keys are traced hyperparameters of the config.

Signals (a sweep stops at an epoch boundary, not mid-step):
- `defer_signals`: a context in which SIGINT/SIGTERM are recorded until the next epoch boundary.
- `signals_deferred`: whether a `defer_signals` block handles the signals now.
- `check_interrupt`: raises `Interrupted` if a signal was recorded.
- `Interrupted`: a sweep stopped by a signal; `exit_code` is 128 + the signal.

Stopping (`hpjax.errors`: the exit codes of the `hpjax` command):
- `stop`: prints `hpjax: error: <message>` on stderr and raises `hpjax.errors.Stop`, a
  SystemExit (exit code 2 by default).
- `is_user_error`: whether a ValueError is a check of hpjax's own on the user's values.
- `disk_fault`: the full or read-only disk behind an error, as one line, or None.
- `DISK_FAULT`: the exit code of a sweep stopped by one (5).
- `naming_file`: a context in which an OSError (a full or read-only disk) names the file being
  written.

Names load on first use: `import hpjax.engine` imports neither JAX nor Flax. To add a name, add it
to `_EXPORTS` and one line above.
"""

from hpjax._lazy import Target, exports

# name -> module, or (module, attribute path) where the internal name differs
_EXPORTS: dict[str, Target] = {
    "Job": "hpjax.engine.batch",
    "JobEnd": "hpjax.engine.jobs",
    "plan": "hpjax.engine.batch",
    "train_jobs": "hpjax.engine.batch",
    "run": "hpjax.engine.jobs",
    "is_task": "hpjax.api",
    "background_writes": "hpjax.results",
    "SweepProgress": "hpjax.engine.progress",
    "read_result": ("hpjax.results", "Result.read"),
    "parse_objectives": "hpjax.results",
    "worst_objective": "hpjax.results",
    "hyperband": "hpjax.engine.schedulers.halving",
    "successive_halving": "hpjax.engine.schedulers.halving",
    "bracket": "hpjax.engine.schedulers.halving",
    "bracket_table": ("hpjax.engine.schedulers.halving", "table"),
    "check_fidelity": ("hpjax.engine.schedulers.halving", "check"),
    "SuccessiveHalving": "hpjax.engine.schedulers.halving",
    "PopulationLauncher": "hpjax.engine.batch",
    "composes_batch_first": "hpjax.engine.batch",
    "Scheduler": "hpjax.engine.schedulers.base",
    "TrialResult": "hpjax.engine.schedulers.base",
    "CONTINUE": "hpjax.engine.schedulers.base",
    "PAUSE": "hpjax.engine.schedulers.base",
    "Stop": "hpjax.engine.schedulers.base",
    "Exploit": "hpjax.engine.schedulers.base",
    "Decision": "hpjax.engine.schedulers.base",
    "FullTraining": "hpjax.engine.schedulers.base",
    "StudyTrials": "hpjax.engine.schedulers.study",
    "PBT": "hpjax.engine.schedulers.pbt",
    "PBTBounds": ("hpjax.engine.schedulers.pbt", "Bounds"),
    "check_pbt_keys": ("hpjax.engine.schedulers.pbt", "check_keys"),
    "defer_signals": ("hpjax.engine.signals", "deferred"),
    "signals_deferred": ("hpjax.engine.signals", "active"),
    "check_interrupt": ("hpjax.engine.signals", "check"),
    "Interrupted": "hpjax.engine.signals",
    "stop": "hpjax.errors",
    "is_user_error": "hpjax.errors",
    "disk_fault": "hpjax.errors",
    "DISK_FAULT": "hpjax.errors",
    "naming_file": ("hpjax.results", "naming"),
}

__all__ = sorted(_EXPORTS)


__getattr__ = exports('hpjax.engine', _EXPORTS)


def __dir__() -> list[str]:
    return list(__all__)
