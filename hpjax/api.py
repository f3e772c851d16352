"""The Python API: compose a config, train it, sweep, and load a trained trial back.

Examples:
  >>> import hpjax
  >>> cfg = hpjax.compose(["data=iris", "train.epochs=2"])
  >>> cfg.data.name, cfg.train.epochs
  ('iris', 2)
"""

import contextlib
import logging
import logging.config
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hpjax.config import Config, ConfigError, to_config

if TYPE_CHECKING:
    from hpjax.results import Result


def compose(overrides: Sequence[str] = (), config_dir: Optional[str] = None,
            config_name: str = "config") -> Config:
    """The validated config that `hpjax <overrides>` would run, composed with Hydra's compose API.

    Args:
      overrides: command-line overrides, e.g. `["optimizer=adamw", "optimizer.lr=3e-4"]`.
      config_dir: a folder of primary configs; default hpjax's own `conf/`.
      config_name: the primary config in it.
    Raises:
      ConfigError: a value is missing, unknown or out of range.

    Examples:
      >>> cfg = compose(["optimizer=adamw", "optimizer.lr=3e-4"])
      >>> cfg.optimizer.name, cfg.optimizer.lr
      ('adamw', 0.0003)
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hpjax.cli import CONF_DIR, register

    register()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose there
        return to_config(hydra_compose(config_name, overrides=list(overrides)))
    with initialize_config_dir(str(config_dir or CONF_DIR), version_base="1.3"):
        return to_config(hydra_compose(config_name, overrides=list(overrides)))


def is_task(task_function: Callable[..., Any]) -> bool:
    """Whether a Hydra task function is hpjax's own (`hpjax.app.train_task`): its jobs can train
    as populations."""
    return bool(getattr(task_function, "hpjax_task", False))


@contextlib.contextmanager
def _own_logging() -> Any:
    """Hydra configures logging for each job (a file handler for app.log, stream handlers on
    the sys.stdout of that moment); in a Python session the caller's logging comes back after:
    every logger's handlers, level and state as they were. A logger first made inside (by a
    library imported during the run: SQLAlchemy sets its own to WARNING) keeps its level and
    handlers, less the job's log files."""
    def loggers() -> dict:
        named = {n: lg for n, lg in logging.Logger.manager.loggerDict.items()
                 if isinstance(lg, logging.Logger)}
        return {"": logging.getLogger(), **named}

    saved = {n: (lg.handlers[:], lg.level, lg.disabled, lg.propagate)
             for n, lg in loggers().items()}
    # Hydra's logging.config.dictConfig would close every existing handler (the caller's,
    # pytest's): it may only forget them for the job
    clear = getattr(logging.config, "_clearExistingHandlers", None)
    if clear is not None:
        logging.config._clearExistingHandlers = logging._handlers.clear
    try:
        yield
    finally:
        if clear is not None:
            logging.config._clearExistingHandlers = clear
        for name, lg in loggers().items():
            kept = saved[name][0] if name in saved else []
            files = [h for h in lg.handlers
                     if isinstance(h, logging.FileHandler) and h not in kept]
            for handler in files:
                handler.close()  # app.log
            if name not in saved:
                lg.handlers[:] = [h for h in lg.handlers if h not in files]
                lg.disabled = False
                continue
            handlers, level, disabled, propagate = saved[name]
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.disabled, lg.propagate = disabled, propagate


@contextlib.contextmanager
def hydra_session(config_dir: Optional[str] = None, keep_logging: bool = True) -> Any:
    """A Hydra instance over `config_dir` (default hpjax's `conf/`), as the `hpjax` command's,
    for runs in this process: Hydra's global state is cleared after, whatever happens, and with
    `keep_logging` the caller's logging comes back as it was (`_own_logging`; off: the jobs'
    logging setup stays, as under the `hpjax` command). `train`, `sweep` and the tests'
    in-process multirun use it.

    Example (a sweep of two trials)::

        with hydra_session() as hydra_:
            hydra_.multirun(config_name="config", task_function=hpjax.app.train_task,
                            overrides=["optimizer.lr=0.01,0.1"], with_log_configuration=False)
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from hpjax.cli import CONF_DIR, register

    register()
    GlobalHydra.instance().clear()
    try:
        with _own_logging() if keep_logging else contextlib.nullcontext():
            yield Hydra.create_main_hydra2(task_name="hpjax", config_search_path=(
                create_config_search_path(str(Path(config_dir or CONF_DIR).resolve()))))
    finally:
        GlobalHydra.instance().clear()


def train(overrides: Sequence[str] = (), output_dir: Optional[str] = None, *,
          config_dir: Optional[str] = None, config_name: str = "config") -> "Result":
    """Trains one configuration, as `hpjax <overrides>` does.

    Args:
      overrides: command-line overrides, e.g. `["model=cnn", "optimizer.lr=3e-3"]`.
      output_dir: the job directory: given, it gets the same files as the command line's
        (`.hydra/`, `metrics.jsonl`, `result.json`, `params/`); None writes nothing.
      config_dir, config_name: the primary config, as for `compose`.
    Returns:
      The trial's `Result`.
    Raises:
      ConfigError: a bad value, data that does not fit, a chosen option whose package is
        missing (`logger=wandb` without wandb: the message the command prints, in one line),
        before anything trains.
    """
    from hpjax.engine.jobs import run
    from hpjax.errors import USER_ERROR, Stop, SweepError
    from hpjax.results import Result

    cfg = compose(overrides, config_dir, config_name)
    if output_dir is None:
        from hpjax.engine.compile import enable_compilation_cache

        enable_compilation_cache()
        return run(cfg)
    try:
        with hydra_session(config_dir) as hydra_:
            hydra_.run(config_name=config_name, task_function=_train_task,
                       overrides=[*overrides, f"hydra.run.dir={Path(output_dir).resolve()}"],
                       with_log_configuration=False)
    except Stop as e:  # the command's exit (a tracker's missing package): never a SystemExit
        if e.code == USER_ERROR:
            raise ConfigError.line(e.message) from None
        raise SweepError(e.message, e.code) from None
    return Result.read(output_dir)


def _train_task(dict_cfg: Any) -> float:
    """`hpjax.app.train_task` for one run that raises a ConfigError instead of exiting."""
    from hydra.core.hydra_config import HydraConfig

    from hpjax.app import _train

    return _train(to_config(dict_cfg), HydraConfig.get().runtime.output_dir, "basic")(dict_cfg)


@dataclass
class Sweep:
    """What `sweep` leaves: the sweep directory, one row per trial (`summary.csv`), the Optuna
    study (hpjax's sweeper; None for Hydra's basic sweeper) and the best trial's `Result`;
    `failed`: how many trials failed with an error, and `exit_code` what the `hpjax` command
    would exit with (0, or 3 when some trials failed: `hpjax.errors`)."""

    dir: Path
    table: list[dict]
    study: Any
    best: Optional["Result"]
    best_dir: Optional[Path]
    failed: int = 0
    exit_code: int = 0


def sweep(overrides: Sequence[str] = (), sweep_dir: Optional[str] = None, *,
          config_dir: Optional[str] = None, config_name: str = "config") -> Sweep:
    """Runs a sweep, as `hpjax -m <overrides>` does, in this process.

    Args:
      overrides: e.g. `["search=tpe", "hydra.sweeper.n_trials=20", "optimizer.lr=tag(log,
        interval(1e-4,1e-1))"]`.
      sweep_dir: the sweep directory (default: Hydra's `outputs/multirun/<time>`).
    Returns:
      A `Sweep`: its table, study and best trial; where some trials failed with an error, its
      `failed` counts them and its `exit_code` is 3.
    Raises:
      SweepError: the sweep could not run (`exit_code` 2: a bad value, a missing package, a
        storage that cannot be written; nothing was written), every trial failed with an
        error (`exit_code` 4; its `sweep` is what the sweep left), or a full or read-only disk
        stopped it (5).
    """
    from hpjax.app import train_task
    from hpjax.errors import ALL_FAILED, Stop, SweepError, exit_codes

    extra = [f"hydra.sweep.dir={Path(sweep_dir).resolve()}"] if sweep_dir else []
    try:
        with hydra_session(config_dir) as hydra_, exit_codes():
            cfg = hydra_.compose_config(config_name, [*overrides, *extra],
                                        run_mode=_multirun())
            directory = Path(str(cfg.hydra.sweep.dir)).resolve()
            hydra_.multirun(config_name=config_name, task_function=train_task,
                            overrides=[*overrides, f"hydra.sweep.dir={directory}"],
                            with_log_configuration=False)
    except Stop as e:
        if e.code not in (3, ALL_FAILED):
            raise SweepError(e.message, e.code) from None
        done = _read_sweep(directory)
        done.exit_code = e.code
        if e.code == ALL_FAILED:
            raise SweepError(e.message, e.code, done) from None
        return done
    return _read_sweep(directory)


def _read_sweep(directory: Path) -> Sweep:
    import csv

    from hpjax.results import Result

    summary = directory / "summary.csv"
    table = list(csv.DictReader(summary.open())) if summary.exists() else []
    study = None
    if (directory / "study.db").exists():
        import optuna

        storage = f"sqlite:///{directory / 'study.db'}"
        names = optuna.get_all_study_names(storage)
        study = optuna.load_study(study_name=names[0], storage=storage) if names else None
    ranked = sorted((r for r in table if r.get("rank")), key=lambda r: int(r["rank"]))
    best_dir = directory / ranked[0]["trial"] if ranked else None
    failed = sum(r.get("status") == "failed" for r in table)
    return Sweep(directory, table, study, Result.read(best_dir) if best_dir else None, best_dir,
                 failed)


def _multirun() -> Any:
    from hydra.types import RunMode

    return RunMode.MULTIRUN


def job_config(job_dir: str) -> Config:
    """The validated config a job directory's trial ran, composed again from its `.hydra/`
    files: the same primary config, search path and overrides."""
    from omegaconf import OmegaConf

    h = OmegaConf.load(Path(job_dir) / ".hydra" / "hydra.yaml").hydra
    cwd = Path(str(h.runtime.cwd))
    main, extra = None, []
    for source in h.runtime.config_sources:
        if source.schema != "file":
            continue
        if source.provider == "main":
            main = cwd / str(source.path)
        elif source.provider not in ("hydra", "schema"):
            extra.append(f"file://{cwd / str(source.path)}")
    overrides = [o for o in h.overrides.task if not o.startswith("hydra.searchpath")]
    if extra:
        overrides.append(f"hydra.searchpath=[{','.join(extra)}]")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    return compose(overrides, str(main) if main else None, str(h.job.config_name))


@dataclass
class Trained:
    """A trial's trained model, read back from its job directory (`load`).

    `variables` are those of the best epoch (Linen's `{"params": ..., "batch_stats": ...}`;
    for NNX, Equinox and plain functions `{"params": {name: array}, "state": ...}`); `module`
    is your own object with the trial's numbers built in: the Linen module, the NNX module
    with the trained state merged, the Equinox module (with its `eqx.nn.State`, a pair), or
    plain functions' `apply` with the parameters bound; `data` the trial's data set (splits
    as trained, the standardisation they used).
    """

    config: Config
    variables: dict
    module: Any
    data: Any
    result: Optional["Result"]
    spec: Any
    hp: dict

    @property
    def params(self) -> Any:
        return self.variables["params"]

    def apply(self, x: Any) -> Any:
        """The model's outputs (logits) for inputs prepared as the splits are."""
        from hpjax.engine import trainer

        return trainer.forward(self.spec, self.hp, self.variables, x)[0]

    def predict(self, x: Any) -> Any:
        """The predictions for raw samples (features as the data function returns them): class
        labels, or regression targets in their own units."""
        import numpy as np

        out = np.asarray(self.apply(self.data.prepare(x)))
        if self.data.y_std is not None:
            out = out * self.data.y_std + self.data.y_mean
            return out[:, 0] if self.data.y_std.ndim == 0 else out
        if self.config.task.name == "binary":
            return self.data.classes[(out[:, 0] > 0).astype(int)]
        return self.data.classes[np.argmax(out, -1)]

    def evaluate(self, split: str = "test") -> dict:
        """`{"<split>/loss", "<split>/accuracy"}` (regression: loss, mse, mae, r2) of the model on
        a split, computed by the same
        compiled program as a trial trained alone: a single run's `result.json` test metrics
        exactly (a trial trained in a population: up to float rounding)."""
        import jax
        import numpy as np

        from hpjax.engine import population

        pop = population.get(self.config, self.data)
        place = population.Placement.of(1)
        inputs = population.stack([self.config], [0], place)
        data = population.eval_split(self.data, split, self.config.train.eval_batch_size)
        variables = jax.tree.map(lambda a: a[None], self.variables)
        out = pop.evaluate(variables, variables, np.ones(1, bool), inputs.hp, inputs.fold, *data)
        return {f"{split}/{k}": float(v[0]) for k, v in out.items()}


def load(job_dir: str, member: int = 0) -> Trained:
    """A trial's model back from its job directory: config, best variables and `predict`.

    Args:
      job_dir: a job directory with `.hydra/` and `params.msgpack` (kept by
        `train.save_params=best`), or an earlier version's Orbax `params/`.
      member: with several seeds or folds per trial, which member's variables (0 to
        `train.repeats * data.cv_folds - 1`).
    Raises:
      FileNotFoundError: the job kept no parameters.
      ValueError: `member` is not one of the trial's members.
    """
    from hpjax import data as data_lib
    from hpjax.engine import checkpoint, trainer
    from hpjax.engine.hparams import hparams, static
    from hpjax.engine.jobs import members_per_trial, orbax_params_dir, params_path
    from hpjax.engine.model import build as build_model
    from hpjax.results import Result

    cfg = job_config(job_dir)
    members = members_per_trial(cfg)
    if not 0 <= member < members:  # else a single member's file would answer for any member
        raise ValueError(
            f"hpjax.load(member={member}): {job_dir} is a trial of {members} member"
            f"{'s' * (members > 1)} (train.repeats={cfg.train.repeats} x "
            f"data.cv_folds={cfg.data.cv_folds}); pass member="
            + ("0" if members == 1 else f"0 to {members - 1}"))
    path = Path(params_path(str(job_dir), member, members))
    if not path.is_file():  # a job of an earlier version: an Orbax checkpoint
        orbax = Path(orbax_params_dir(str(job_dir), member, members))
        if not orbax.is_dir():
            raise FileNotFoundError(f"{path}: no saved parameters (train.save_params=best keeps "
                                    "them)")
        path = orbax
    variables = checkpoint.load_params(str(path))
    ds = data_lib.load(cfg.data, cfg.task.name == "regression")
    if ds.folds:
        import dataclasses

        fold = member % cfg.data.cv_folds
        ds = dataclasses.replace(ds, folds=0, **{f: getattr(ds, f)[fold] for f in (
            "x_train", "y_train", "x_val", "y_val", "x_test", "y_test")})
    k = trainer.outputs(cfg, ds.num_classes)
    spec = trainer.Spec(static(cfg), build_model(cfg.model, k), ds.input_shape, ds.n_train, None,
                        ds.y_scale, k)
    hp = hparams(cfg)
    module = spec.model.module(trainer._model_hp(spec, hp), variables)
    return Trained(cfg, variables, module, ds, Result.read(job_dir), spec, hp)
