"""The `logger` group: each tracker's own reader finds every trial's metrics of a real sweep."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_html_report import GRID
from test_launcher import multirun

from hpjax import loggers
from hpjax.results import Result

pytestmark = pytest.mark.xdist_group("report")  # with test_html_report: one compile, one worker


@pytest.fixture(scope="module")
def logged_sweep(tmp_path_factory):
    """The 8-trial grid under Hydra's basic sweeper with three trackers at once."""
    tmp = tmp_path_factory.mktemp("loggers")
    uri = (tmp / "mlruns").as_uri()
    multirun([*GRID, "logger=[csv,tensorboard,mlflow]",
              f"hydra.callbacks.mlflow.tracking_uri={uri}"], tmp / "sweep")
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
    pytest.importorskip("tensorboard", reason="pip install -e '.[test]'")
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
    pytest.importorskip("mlflow", reason="pip install -e '.[test]'")
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


def test_a_tracker_that_is_not_installed_names_its_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"logger=tensorboard needs the tensorboardX package.*"
                                          r"pip install 'hpjax\[tensorboard\]'"):
        loggers.TensorBoardLogger()
