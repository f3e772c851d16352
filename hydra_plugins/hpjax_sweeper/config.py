from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PBTConf:
    interval: int = 4
    fraction: float = 0.25
    resample_probability: float = 0.25


@dataclass
class HpjaxSweeperConf:
    _target_: str = "hydra_plugins.hpjax_sweeper.sweeper.HpjaxSweeper"
    # Search algorithm: grid, random, tpe, gp, cmaes, nsga2 or qmc; sha (successive halving) or
    # hyperband: multi-fidelity brackets over train.epochs; pbt: population-based training;
    # these three take their configurations from `sampler`
    algorithm: str = "random"
    # Total number of trials in the study (grid: null runs every combination; sha: null is
    # eta^s_max configurations; hyperband: null is one pass over its brackets)
    n_trials: Optional[int] = 20
    # Trials asked and launched together: the unit a launcher can run in parallel
    batch_size: int = 1
    # Seed of the search algorithm: the same seed proposes the same trials
    seed: int = 0
    # Search space, key -> Hydra override value: choice(a, b), a,b, range(...), interval(...),
    # tag(log, interval(...)); the command line adds keys or replaces them
    params: Optional[dict[str, str]] = field(default_factory=dict)
    # Optuna storage URL (sqlite:///..., postgresql://...); null: study.db in the sweep directory
    storage: Optional[str] = None
    # Name of the study in the storage; a rerun with the same storage and name resumes it
    study_name: str = "hpjax"
    # Several objectives as metric:min or metric:max (e.g. [val/accuracy:max, num_params:min]),
    # read from each trial's result.json; empty: the task's return value, in objective.mode
    objectives: list[str] = field(default_factory=list)
    # Direction of a single objective, min or max (as objective.mode); null: the app's
    # objective.mode (min when it has none)
    direction: Optional[str] = None
    # Keep the trained parameters (params.msgpack in each job directory) of only the best this many
    # trials when the sweep ends; null: keep every trial's
    keep_params: Optional[int] = None
    # Mark trials left running by a killed sweep as failed when it resumes (one driver per study)
    fail_stale_trials: bool = True
    # Several workers on one study: each records a heartbeat for its running trials every this
    # many seconds; a trial whose heartbeat is older than grace_period (default: twice the
    # interval) is marked failed and run again by a live worker. null: off (one driver)
    heartbeat_interval: Optional[int] = None
    grace_period: Optional[int] = None
    # A trial whose worker stopped runs again with the same parameters at most this many times
    max_retries: int = 2
    # Seconds a worker waits between looks at a study whose other trials run elsewhere
    poll_s: float = 2.0
    # sha and hyperband: the sampler that proposes each bracket's configurations (random, tpe
    # for BOHB-style, ...); null: random
    sampler: Optional[str] = None
    # sha, hyperband and the pruners: a rung keeps the top 1/eta of its trials
    eta: int = 3
    # sha, hyperband and the pruners: the epochs of the first rung (train.epochs is the most)
    min_epochs: int = 1
    # Optuna pruner, with any sampler: none, asha (= sha), hyperband, median, or a node with the
    # _target_ of any Optuna pruner; each trial reports its objective every epoch
    pruner: Any = "none"
    # algorithm=pbt (population-based training; n_trials is the population): every `interval`
    # epochs the bottom `fraction` copy the top `fraction` and explore (x0.8 or x1.2, or a new
    # value with `resample_probability`)
    pbt: PBTConf = field(default_factory=PBTConf)


ConfigStore.instance().store(group="hydra/sweeper", name="hpjax", node=HpjaxSweeperConf,
                             provider="hpjax")

__all__: list[Any] = ["HpjaxSweeperConf"]
