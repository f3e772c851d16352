"""The typed result: one writer and one reader of result.json, metrics by name."""

import dataclasses
import json
import threading

import pytest

from hpjax.results import (
    Outcome,
    Result,
    aggregate,
    background_writes,
    json_safe,
    parse_objectives,
    write_atomic,
)


def test_result_round_trips_through_its_file_and_names_its_metrics(tmp_path):
    r = Result("ok", 0.9, "val/accuracy", "max", best_epoch=3,
               best={"val/accuracy": 0.9, "val/loss": float("nan")},
               test={"test/accuracy": 0.85}, num_params=123)
    r.write(tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["best"]["val/loss"] is None  # NaN as null: JSON has no NaN
    back = Result.read(tmp_path)
    assert back.status == "ok" and back.best_epoch == 3 and back.ok
    assert (back.metric("val/accuracy"), back.metric("test/accuracy"),
            back.metric("num_params"), back.metric("nope")) == (0.9, 0.85, 123.0, None)
    assert back.sweeper_value() == 0.9
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then moved into place


def test_a_missing_or_truncated_result_reads_as_none(tmp_path, caplog):
    assert Result.read(tmp_path) is None
    (tmp_path / "result.json").write_text('{"status": "ok", "objec')
    assert Result.read(tmp_path) is None
    assert "result.json is unreadable" in caplog.text


def test_failed_and_diverged_results_give_the_sweeper_the_worst_value():
    assert Result.failed("bad", "val/loss", "min").sweeper_value() == float("inf")
    assert Result("diverged", None, "val/accuracy", "max").sweeper_value() == -float("inf")


def test_aggregate_means_members_and_keeps_each():
    members = [Outcome(Result("ok", v, "val/accuracy", "max", best_epoch=e, seed=s,
                              best={"val/accuracy": v}, test={"test/accuracy": v}),
                       [{"epoch": 1, "val/accuracy": v}]) for v, e, s in ((0.8, 2, 0), (0.9, 4, 1))]
    out = aggregate(members)
    assert out.result.objective == pytest.approx(0.85)
    assert out.result.objective_std == pytest.approx(0.05)
    assert out.result.members["seed"] == [0, 1] and out.result.best_epoch == 3
    assert out.rows == [{"epoch": 1, "val/accuracy": pytest.approx(0.85), "members": 2}]
    members[1].result.status = "diverged"
    assert aggregate(members).result.status == "diverged"
    assert aggregate(members).result.objective is None


def test_objectives_parse_as_metric_and_min_or_max():
    assert parse_objectives(["val/accuracy:max", "num_params:min"]) == {
        "val/accuracy": "max", "num_params": "min"}
    with pytest.raises(ValueError, match="'val/accuracy:up' must be metric:min or metric:max"):
        parse_objectives(["val/accuracy:up"])


def test_result_json_is_the_dataclass_as_json_and_metric_reads_every_field(tmp_path):
    r = Result("ok", 0.9, "val/accuracy", "max", best_epoch=2, best={"val/loss": float("inf")},
               test={"test/accuracy": 0.5}, members={"seed": [0, 1], "objective": [0.8, 1.0]},
               population={"label": "population 1/1", "members": 2}, train_time_s=1.5)
    r.write(tmp_path)
    want = json.dumps(json_safe(dataclasses.asdict(r)) | {"best": {"val/loss": None}}, indent=2)
    assert (tmp_path / "result.json").read_text() == want
    for f in dataclasses.fields(Result):  # each numeric field by name, as asdict gave them
        value = getattr(r, f.name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        assert r.metric(f.name) == (float(value) if number else None), f.name
    assert r.metric("stopped_early") is None and r.metric("members") is None


def test_background_writes_keep_their_order_and_say_which_failed(tmp_path):
    with background_writes() as writer:
        writer.tag = "job 0"
        write_atomic(tmp_path / "a.json", "1")
        write_atomic(tmp_path / "a.json", "2")  # the later write wins
        writer.tag = "job 1"
        write_atomic(tmp_path / "missing" / "b.json", "x")  # no such directory
        writer.append(str(tmp_path / "log"), "one\n", "w")
        writer.append(str(tmp_path / "other"), "", "w")
        writer.append(str(tmp_path / "log"), "two\n")
        failed = writer.flush()
        assert (tmp_path / "a.json").read_text() == "2"
        assert list(failed) == ["job 1"] and isinstance(failed["job 1"], FileNotFoundError)
        assert (tmp_path / "log").read_text() == "one\ntwo\n"
        assert (tmp_path / "other").read_text() == ""
        writer.tag = "job 2"
        write_atomic(tmp_path / "c.json", "3")
    assert (tmp_path / "c.json").read_text() == "3"  # written by the end of the block
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.json", "log", "other"]
    assert not [t for t in threading.enumerate() if t.name == "hpjax-writer"]
