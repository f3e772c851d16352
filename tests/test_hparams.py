"""The rule table of hpjax/hparams.py, key by key: traced keys share a program, static ones not."""

import pytest

from conftest import compose_config
from hpjax.hparams import TRACED, hparams, signature

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
    "data.split_seed=3", "data.val_fraction=0.2",
]
HOST_ONLY_CHANGES = ["train.early_stopping.patience=2", "train.early_stopping.monitor=val/accuracy",
                     "objective.metric=val/loss", "objective.mode=min"]


def split(extra=()):
    cfg = compose_config(BASE + list(extra))
    return signature(cfg), {k: float(v) for k, v in hparams(cfg).items()}


@pytest.mark.parametrize("change", TRACED_CHANGES)
def test_traced_key_changes_a_number_not_the_program(change):
    (sig, hp), (sig2, hp2) = split(), split([change])
    assert sig2 == sig
    assert hp2 != hp and hp2.keys() == hp.keys()


@pytest.mark.parametrize("change", STATIC_CHANGES)
def test_static_key_changes_the_program(change):
    assert split([change])[0] != split()[0]


@pytest.mark.parametrize("change", HOST_ONLY_CHANGES)
def test_host_only_key_changes_neither(change):
    assert split([change]) == split()


def test_step_and_momentum_families_trace_their_own_numbers():
    for family, key in (("schedule=step", "schedule.gamma=0.5"),
                        ("schedule=exponential", "schedule.decay_rate=0.5"),
                        ("optimizer=momentum", "optimizer.momentum=0.5"),
                        ("optimizer=rmsprop", "optimizer.decay=0.5"),
                        ("optimizer=adagrad", "optimizer.initial_accumulator_value=0.5")):
        (sig, hp), (sig2, hp2) = split([family]), split([family, key])
        assert sig == sig2 and hp != hp2, key
    assert {k for keys in TRACED.values() for k in keys} >= {"lr", "dropout", "seed"}
