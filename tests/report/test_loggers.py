"""The `logger` group: each tracker's own reader finds every trial's metrics of a real sweep."""

import csv
import json
import struct
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import REPORT_GRID as GRID
from helpers import multirun, need
from hpjax import loggers
from hpjax.results import Result

pytestmark = pytest.mark.xdist_group("report")  # with test_html_report: one compile, one worker


@pytest.fixture(scope="module")
def logged_sweep(tmp_path_factory):
    """The 8-trial grid under Hydra's basic sweeper with the four trackers at once (logger=wandb
    in W&B's disabled mode: its offline files are checked below, for two trials)."""
    tmp = tmp_path_factory.mktemp("loggers")
    uri = (tmp / "mlruns").as_uri()
    logged = []  # the W&B logger's trials: its group runs, in W&B's disabled mode (no files)
    log_trial = loggers.WandbLogger.log_trial
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loggers.WandbLogger, "log_trial",
                      lambda self, trial: logged.append((self.mode, trial.name)) or log_trial(
                          self, trial))
        multirun([*GRID, "logger=[csv,tensorboard,mlflow,wandb]",
                  f"hydra.callbacks.mlflow.tracking_uri={uri}",
                  "hydra.callbacks.wandb.mode=disabled"], tmp / "sweep")
    assert sorted(logged) == [("disabled", str(i)) for i in range(8)]
    assert not (tmp / "sweep" / "wandb").exists()  # disabled: nothing written
    return tmp / "sweep", uri


def trials(sweep: Path) -> dict[str, tuple[dict, list, Result]]:
    """{job: (overrides, metrics.jsonl rows, result)} of a sweep."""
    out = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(job / ".hydra/overrides.yaml"))
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        out[job.name] = (overrides, rows, Result.read(job))
    assert len(out) == 8
    return out


def test_tensorboard_has_every_trials_scalars_and_hparams(logged_sweep):
    need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep, _ = logged_sweep
    for job, (overrides, rows, result) in trials(sweep).items():
        events = EventAccumulator(str(sweep / "tensorboard" / job))
        events.Reload()
        for metric in ("train/loss", "val/accuracy", "val/loss"):
            logged = events.Scalars(metric)
            assert [e.step for e in logged] == [r["epoch"] for r in rows]
            assert [e.value for e in logged] == pytest.approx([r[metric] for r in rows])
        assert events.Scalars("test/accuracy")[0].value == pytest.approx(
            result.test["test/accuracy"])
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert start.hparams["optimizer.lr"].number_value == pytest.approx(
            float(overrides["optimizer.lr"]))
        assert start.hparams["activation"].string_value == overrides["activation"]


def test_mlflow_has_one_run_per_trial_under_the_sweeps_run(logged_sweep):
    need("mlflow")
    from mlflow.tracking import MlflowClient

    sweep, uri = logged_sweep
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("hpjax").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.data.tags["hpjax.sweep_dir"] for p in parents] == [str(sweep.resolve())]
    assert parents[0].info.status == "FINISHED"
    children = {r.data.tags["hpjax.job_dir"]: r for r in runs if r not in parents}
    for job, (overrides, rows, result) in trials(sweep).items():
        run = children[str(sweep / job)]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["optimizer.lr"] == overrides["optimizer.lr"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(
            run.info.run_id, "val/accuracy"))
        assert [s for s, _ in history] == [r["epoch"] for r in rows]
        assert [v for _, v in history] == pytest.approx([r["val/accuracy"] for r in rows])
        assert run.data.metrics["test/accuracy"] == pytest.approx(result.test["test/accuracy"])
        assert run.data.metrics["num_params"] == result.num_params
        assert run.info.status == "FINISHED"


def test_csv_has_every_epoch_of_every_trial(logged_sweep):
    sweep, _ = logged_sweep
    for job, (overrides, rows, result) in trials(sweep).items():
        with open(sweep / "csv" / job / "metrics.csv") as f:
            logged = list(csv.DictReader(f))
        assert [int(r["epoch"]) for r in logged] == [r["epoch"] for r in rows]
        assert [float(r["val/loss"]) for r in logged] == pytest.approx(
            [r["val/loss"] for r in rows])
        saved = OmegaConf.load(sweep / "csv" / job / "hparams.yaml")
        assert saved.params.activation == overrides["activation"]
        assert saved.result["best/val/accuracy"] == pytest.approx(result.objective)


def wandb_records(path: Path):
    """The protobuf records of an offline W&B run's `.wandb` file (W&B's LevelDB-log framing:
    a 7-byte header, 32 KiB blocks of records with a 7-byte header each, long ones in parts)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, part = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            return
        if kind in (1, 4):  # a full record, or a record's last part
            yield wandb_internal_pb2.Record.FromString(part)
            part = b""


def test_wandb_offline_runs_hold_every_epoch(logged_sweep, tmp_path):
    """Two of the sweep's trials through the W&B logger (each offline run starts W&B's
    service: about 2 s a trial), read back from W&B's own record format."""
    need("wandb")
    sweep, _ = logged_sweep
    logger = loggers.WandbLogger(save_dir=str(tmp_path))
    for job, (overrides, rows, result) in list(trials(sweep).items())[:2]:
        logger.log_trial(loggers.TrialRecord(job, sweep / job, tmp_path, "sweep",
                                             {k: loggers._value(v) for k, v in overrides.items()},
                                             rows, result))
    logger.on_multirun_end(None)  # the runs' files complete
    runs = {}
    for path in (tmp_path / "wandb").glob("offline-run-*/*.wandb"):
        records = list(wandb_records(path))
        [info] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert info.run_group == "sweep"
        runs[info.display_name] = info, records
    assert sorted(runs) == ["trial 0", "trial 1"]
    for job, (overrides, rows, _) in list(trials(sweep).items())[:2]:
        info, records = runs[f"trial {job}"]
        config = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                  for i in info.config.update}
        assert config["optimizer.lr"] == pytest.approx(float(overrides["optimizer.lr"]))
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        assert [h["epoch"] for h in history] == [r["epoch"] for r in rows]
        assert [h["val/accuracy"] for h in history] == pytest.approx(
            [r["val/accuracy"] for r in rows])


def test_a_tracker_that_is_not_installed_names_its_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorboardX", None)
    with pytest.raises(SystemExit, match=r"logger=tensorboard needs the tensorboardX package.*"
                                         r"pip install 'hpjax\[tensorboard\]'") as e:
        loggers.TensorBoardLogger()
    assert e.value.code == 2  # one line and exit 2 (hpjax.errors.Stop), before the run starts
