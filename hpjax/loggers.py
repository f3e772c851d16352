"""Experiment trackers as Hydra callbacks: the `logger` config group.

`logger=tensorboard`, `logger=mlflow`, `logger=wandb`, `logger=csv`, or several at once
(`logger=[tensorboard,mlflow]`) add a callback under `hydra.callbacks` (`conf/logger/*.yaml`).
Each logs one run per trial when its job ends, from what the job wrote (`metrics.jsonl`,
`result.json`, its overrides): the numbers the host already had each epoch, so a population's
members are logged one by one with no extra device work. Every tracker is an optional extra
(`pip install 'hpjax[tensorboard]'`); a missing one fails when the sweep starts, naming it.
"""

import csv
import importlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hpjax.results import METRICS_FILE, Result


def require(module: str, logger: str, extra: str) -> Any:
    """Imports a tracker's package, or says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # one line and exit 2 before the run or sweep starts
        from hpjax.errors import stop

        stop(f"logger={logger} needs the {module} package, which is not installed ({e}): "
             f"pip install 'hpjax[{extra}]'")


def _value(text: str) -> Any:
    """An override's value as a number where it is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@dataclass
class TrialRecord:
    """What a logger logs of one trial."""

    name: str  # "3" (the job number) in a sweep, "run" for a single run
    job_dir: Path
    save_dir: Path  # where trackers that write files put theirs
    sweep: Optional[str]  # the sweep directory's name; None for a single run
    params: dict  # the job's overrides, typed
    rows: list  # metrics.jsonl
    result: Result

    def epoch_metrics(self) -> list[tuple[int, dict]]:
        """(epoch, {name: finite number}) per epoch."""
        return [(int(r["epoch"]), {k: float(v) for k, v in r.items() if k != "epoch" and
                                   isinstance(v, (int, float)) and math.isfinite(v)})
                for r in self.rows if "epoch" in r]

    def summary(self) -> dict:
        """The trial's result as metrics: its best epoch's (`best/val/accuracy`), its test
        metrics, the objective, epochs and parameter count."""
        r = self.result
        out = {f"best/{k}": v for k, v in r.best.items()} | dict(r.test)
        out |= {"objective": r.objective, "epochs_run": r.epochs_run, "num_params": r.num_params,
                "best_epoch": r.best_epoch}
        return {k: float(v) for k, v in out.items()
                if isinstance(v, (int, float)) and math.isfinite(v)}


_NOT_PARAMS = ("logger", "search")  # group choices that do not change the training


class TrialLogger(Callback):
    """Logs each trial when its job ends (a single run: the run)."""

    logger = module = extra = ""
    subdir = ""  # the tracker's folder in the sweep (or run) directory

    def __init__(self, save_dir: Optional[str] = None) -> None:
        self.lib = require(self.module, self.logger, self.extra)
        self.save_dir = save_dir

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        record = self.record(config)
        if record is not None:
            self.log_trial(record)

    def record(self, config: DictConfig) -> Optional[TrialRecord]:
        job_dir = Path(config.hydra.runtime.output_dir)
        result = Result.read(job_dir)
        if result is None:  # the job crashed before it wrote a result
            return None
        sweep_dir = Path(config.hydra.sweep.dir)
        # (Hydra's multirun called in process, as tests do, leaves hydra.mode unset)
        multirun = config.hydra.mode == RunMode.MULTIRUN or job_dir.resolve().is_relative_to(
            sweep_dir.resolve())
        base = sweep_dir if multirun else job_dir
        rows = []
        if (job_dir / METRICS_FILE).exists():
            rows = [json.loads(line) for line in (job_dir / METRICS_FILE).read_text().splitlines()
                    if line.strip()]
        overrides = OmegaConf.select(config, "hydra.overrides.task", default=[]) or []
        params = {k.lstrip("+~"): _value(v) for k, _, v in (str(o).partition("=")
                                                             for o in overrides)
                  if k.lstrip("+~") not in _NOT_PARAMS}
        return TrialRecord(str(config.hydra.job.num) if multirun else "run", job_dir,
                           Path(self.save_dir) if self.save_dir else base / self.subdir,
                           base.name if multirun else None, params, rows, result)

    def log_trial(self, trial: TrialRecord) -> None:
        raise NotImplementedError


class CSVLogger(TrialLogger):
    """`csv/<trial>/metrics.csv` (one row per epoch) and `hparams.yaml`, as Lightning's
    CSVLogger writes them."""

    logger, module, extra, subdir = "csv", "csv", "", "csv"

    def log_trial(self, trial: TrialRecord) -> None:
        folder = trial.save_dir / trial.name
        folder.mkdir(parents=True, exist_ok=True)
        epochs = trial.epoch_metrics()
        names = list(dict.fromkeys(k for _, m in epochs for k in m))
        with open(folder / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", *names])
            w.writerows([e, *(m.get(k, "") for k in names)] for e, m in epochs)
        OmegaConf.save(OmegaConf.create({"params": trial.params, "status": trial.result.status,
                                         "result": trial.summary()}), folder / "hparams.yaml")


class TensorBoardLogger(TrialLogger):
    """One TensorBoard run per trial (`tensorboard/<trial>/`): every metric per epoch as a
    scalar, the result as `best/...` and `test/...` scalars, and the HParams plugin's summary
    (the trial's overrides against those results), so the HParams tab compares trials."""

    logger, module, extra, subdir = "tensorboard", "tensorboardX", "tensorboard", "tensorboard"

    def log_trial(self, trial: TrialRecord) -> None:
        from tensorboardX.summary import hparams

        summary = trial.summary()
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in trial.params.items()} | {"status": trial.result.status}
        with self.lib.SummaryWriter(logdir=str(trial.save_dir / trial.name)) as w:
            for epoch, metrics in trial.epoch_metrics():
                for name, value in metrics.items():
                    w.add_scalar(name, value, epoch)
            for summary_pb in hparams(params, summary):
                w.file_writer.add_summary(summary_pb)
            step = trial.result.epochs_run
            for name, value in summary.items():
                w.add_scalar(name, value, step)


class MLflowLogger(TrialLogger):
    """One MLflow run per trial (parameters, per-epoch metrics, the result as metrics, status),
    nested under one parent run per sweep; a local `mlruns/` file store by default."""

    logger, module, extra = "mlflow", "mlflow", "mlflow"

    def __init__(self, tracking_uri: Optional[str] = None, experiment_name: str = "hpjax",
                 save_dir: Optional[str] = None) -> None:
        super().__init__(save_dir)
        self.tracking_uri = tracking_uri or Path("mlruns").resolve().as_uri()
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store "in maintenance mode" and refuses it unless asked;
            # a folder needs no database and opens on a cluster's file system.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.experiment_name = experiment_name
        self._client: Any = None
        self._parents: dict[str, str] = {}

    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment_name)
        return found.experiment_id if found else client.create_experiment(self.experiment_name)

    def parent(self, experiment: str, sweep_dir: str) -> str:
        """The sweep's parent run: found by its tag (a job in another process), else made."""
        if sweep_dir not in self._parents:
            client = self.client()
            runs = client.search_runs([experiment], f"tags.`hpjax.sweep_dir` = '{sweep_dir}'")
            self._parents[sweep_dir] = runs[0].info.run_id if runs else client.create_run(
                experiment, run_name=Path(sweep_dir).name,
                tags={"hpjax.sweep_dir": sweep_dir}).info.run_id
        return self._parents[sweep_dir]

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.parent(self.experiment_id(), str(Path(config.hydra.sweep.dir).resolve()))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        run = self._parents.get(str(Path(config.hydra.sweep.dir).resolve()))
        if run is not None:
            self.client().set_terminated(run, "FINISHED")

    def log_trial(self, trial: TrialRecord) -> None:
        from mlflow.entities import Metric, Param

        client, experiment = self.client(), self.experiment_id()
        tags = {"hpjax.job_dir": str(trial.job_dir), "hpjax.status": trial.result.status}
        if trial.sweep is not None:
            tags["mlflow.parentRunId"] = self.parent(experiment,
                                                     str(trial.job_dir.parent.resolve()))
        run = client.create_run(experiment, run_name=f"trial {trial.name}"
                                if trial.sweep is not None else None, tags=tags).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, e) for e, m in trial.epoch_metrics() for k, v in m.items()]
        metrics += [Metric(k, v, now, trial.result.epochs_run) for k, v in
                    trial.summary().items()]
        params = [Param(k, str(v)[:6000]) for k, v in trial.params.items()]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limits
            client.log_batch(run, metrics=metrics[i:i + 1000], params=params if i == 0 else [])
        client.set_terminated(run, "FINISHED" if trial.result.ok else "FAILED")


class WandbLogger(TrialLogger):
    """One W&B run per trial, grouped by sweep; offline by default (`wandb sync` uploads).
    W&B puts its runs in `wandb/` under `save_dir` (default: the sweep or run directory)."""

    logger, module, extra, subdir = "wandb", "wandb", "wandb", ""

    def __init__(self, project: str = "hpjax", mode: str = "offline",
                 save_dir: Optional[str] = None) -> None:
        super().__init__(save_dir)
        self.project, self.mode = project, mode

    def log_trial(self, trial: TrialRecord) -> None:
        trial.save_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")  # no banner per trial
        run = self.lib.init(project=self.project, mode=self.mode, dir=str(trial.save_dir),
                            group=trial.sweep, name=f"trial {trial.name}", config=trial.params,
                            reinit="create_new")
        try:
            for epoch, metrics in trial.epoch_metrics():
                run.log(metrics | {"epoch": epoch}, step=epoch)
            run.summary.update(trial.summary() | {"status": trial.result.status})
        finally:
            run.finish(exit_code=0 if trial.result.ok else 1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # W&B's service writes the runs' files in the background: stop it, so that they are
        # complete when the sweep returns.
        self.lib.teardown()


__all__ = ["CSVLogger", "MLflowLogger", "TensorBoardLogger", "TrialLogger", "WandbLogger"]
