"""The traced rule, read from the schemas: traced keys share a program, static ones do not,
per-member keys do neither, and a program builder cannot read what differs between members."""

import dataclasses
import functools
import re
from pathlib import Path

import pytest

from helpers import compose_config
from hpjax.config import choices, groups, is_per_member, is_traced
from hpjax.engine.hparams import StaticConfigError, hparams, rule_table, signature, static

BASE = ["optimizer=adamw", "optimizer.clip_norm=1.0", "schedule=warmup_cosine",
        "activation=leaky_relu"]

TRACED_CHANGES = [
    "optimizer.lr=0.05", "optimizer.weight_decay=0.3", "optimizer.clip_norm=2.0",
    "optimizer.b1=0.8", "optimizer.b2=0.9", "optimizer.eps=1e-6", "model.dropout=0.4",
    "activation=tanh", "activation.negative_slope=0.2", "train.seed=9",
    "train.label_smoothing=0.1", "schedule.end_ratio=0.1", "schedule.init_ratio=0.2",
]
STATIC_CHANGES = [
    "model.width=64", "model.num_layers=3", "model.norm=layer", "model=cnn", "optimizer=adam",
    "optimizer.clip_norm=null", "schedule=cosine", "schedule.warmup_fraction=0.3",
    "train.batch_size=32", "train.epochs=7", "train.eval_batch_size=128", "data=wine",
    "data.split_seed=3", "data.val_fraction=0.2", "data.cv_folds=3",
]
PER_MEMBER_CHANGES = ["train.early_stopping.patience=2",
                      "train.early_stopping.monitor=val/accuracy", "train.repeats=2",
                      "train.checkpoint_every=3",
                      ["objective.metric=val/loss", "objective.mode=min"]]  # (a loss: min)


def flat(hp, prefix=""):
    out = {}
    for k, v in hp.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: float(v)})
    return out


def split(extra=()):
    return _split(tuple(extra))


# Composed once each in this module (a Hydra compose is ~0.12 s of CPU): BASE's config and split,
# which every comparison reads, and the configs the tests only read.
@functools.cache
def _split(extra):
    cfg = compose_config(BASE + list(extra)) if extra else base()
    return signature(cfg), flat(hparams(cfg))


@functools.cache
def base():
    return compose_config(BASE)


@pytest.mark.parametrize("change", TRACED_CHANGES)
def test_traced_key_changes_its_own_number_not_the_program(change):
    (sig, hp), (sig2, hp2) = split(), split([change])
    assert sig2 == sig and hp2.keys() == hp.keys()
    key = change.split("=")[0]
    changed = {k for k in hp if hp[k] != hp2[k]}
    assert changed == {"activation.name" if key == "activation" else key}


@pytest.mark.parametrize("change", STATIC_CHANGES)
def test_static_key_changes_the_program(change):
    assert split([change])[0] != split()[0]


@pytest.mark.parametrize("change", PER_MEMBER_CHANGES)
def test_per_member_key_changes_neither(change):
    assert split(change if isinstance(change, list) else [change]) == split()


def test_hp_is_nested_by_group():
    hp = hparams(base())
    assert set(hp) == {"model", "activation", "optimizer", "schedule", "train"}
    assert float(hp["optimizer"]["lr"]) == pytest.approx(1e-3)
    assert hp["activation"]["name"].dtype.name == "int32" and hp["train"]["seed"] == 0
    assert "clip_norm" not in hparams(compose_config(["optimizer.clip_norm=null"]))["optimizer"]


def test_step_and_momentum_families_trace_their_own_numbers():
    for family, key in (("schedule=step", "schedule.gamma=0.5"),
                        ("schedule=exponential", "schedule.decay_rate=0.5"),
                        ("optimizer=momentum", "optimizer.momentum=0.5"),
                        ("optimizer=rmsprop", "optimizer.decay=0.5"),
                        ("optimizer=adagrad", "optimizer.initial_accumulator_value=0.5")):
        (sig, hp), (sig2, hp2) = split([family]), split([family, key])
        assert sig == sig2 and hp != hp2, key


def test_the_static_view_refuses_traced_and_per_member_keys_by_name():
    view = static(base())
    assert (view.optimizer.name, view.train.epochs, view.model.widths) == ("adamw", 30,
                                                                          (128, 128))
    with pytest.raises(StaticConfigError) as e:
        _ = view.optimizer.lr
    assert str(e.value) == (
        "optimizer.lr is traced: the members of one program may differ in it, so the static "
        "config that builds the program does not hold it; read it from the traced "
        "hp['optimizer']['lr']")
    with pytest.raises(StaticConfigError, match=r"^model\.dropout is traced"):
        _ = view.model.dropout
    with pytest.raises(StaticConfigError, match=r"^train\.checkpoint_every is per member: .* "
                                                r"read it from each member's own config"):
        _ = view.train.checkpoint_every
    with pytest.raises(StaticConfigError, match=r"^objective\.metric is per member"):
        _ = view.objective.metric
    with pytest.raises(StaticConfigError, match=r"^train\.early_stopping is per member"):
        _ = view.train.early_stopping
    # an unset Optional traced key is structure: readable as None; a set one is not
    assert static(compose_config(["optimizer.clip_norm=null"])).optimizer.clip_norm is None
    with pytest.raises(StaticConfigError, match=r"^optimizer\.clip_norm is traced"):
        _ = view.optimizer.clip_norm


def test_every_choice_comes_from_one_registry_and_every_yaml_extends_it():
    conf = Path(__file__).resolve().parents[2] / "conf"
    for group in groups():
        schemas = choices(group)
        for yaml in (conf / group).glob("*.yaml"):
            base = re.search(r"- base_(\w+)", yaml.read_text()).group(1)
            assert base in schemas, (yaml, base)
    assert set(choices("optimizer")) == {"sgd", "momentum", "adam", "adamw", "lamb", "lion",
                                         "rmsprop", "adagrad"}


def test_documented_rule_table_is_the_schemas_own():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "populations.md").read_text()
    assert rule_table() in doc
    traced = {f"{g}.{f.name}" for g in groups() for s in choices(g).values()
              for f in dataclasses.fields(s) if is_traced(f)}
    assert {"optimizer.lr", "model.dropout", "activation.name"} <= traced
    from hpjax.config import TrainConfig

    assert {f.name for f in dataclasses.fields(TrainConfig) if is_per_member(f)} == {
        "repeats", "checkpoint_every", "early_stopping", "save_params", "hparam_schedule"}
