"""Schemas of the `optimizer` and `schedule` groups, each with the Optax code it stands for.

The builders run inside the compiled program. `n` holds the traced numbers of the trial (the
schema's `traced` fields, by name): a trial that changes only numbers reuses the program.
`self` is the static view of the config (`hpjax.engine.hparams.static`): reading a traced field
from it raises, so a builder cannot bake one member's number into every member's program.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from hpjax.config._schema import Schema, traced

Numbers = Mapping[str, Any]


def _decay_mask(params: Any) -> Any:
    # Weight decay on matrices and kernels only: biases and norm scales are left alone.
    import jax

    return jax.tree.map(lambda p: p.ndim > 1, params)


@dataclass
class OptimizerConfig(Schema):
    group = "optimizer"
    name: str = MISSING
    # Base (peak) learning rate; the schedule scales it over training
    lr: float = traced(1e-3)
    # L2 penalty added to the gradient (sgd, momentum, adam, rmsprop, adagrad) or decoupled
    # weight decay (adamw, lamb, lion); applied to weight matrices and kernels, not biases/scales
    weight_decay: float = traced(0.0)
    # Clip gradients to this global norm before the update; null turns clipping off
    clip_norm: Optional[float] = traced(None)

    def __post_init__(self) -> None:
        self._check_name()
        self._check_positive("lr")
        self._check_non_negative("weight_decay")
        if self.clip_norm is not None:
            self._check_positive("clip_norm")

    def transform(self, lr: Any, n: Numbers) -> Any:
        """The update rule at learning rate `lr` (a schedule), before clipping."""
        raise NotImplementedError

    def optimizer(self, lr: Any, n: Numbers) -> Any:
        """`transform`, clipped to `n["clip_norm"]` where clipping is on."""
        import optax

        tx = self.transform(lr, n)
        return optax.chain(optax.clip_by_global_norm(n["clip_norm"]), tx) \
            if "clip_norm" in n else tx

    @staticmethod
    def _coupled(tx: Any, n: Numbers) -> Any:
        """L2 penalty added to the gradient, as torch.optim's `weight_decay` does."""
        import optax

        return optax.chain(optax.add_decayed_weights(n["weight_decay"], _decay_mask), tx)


@dataclass
class SGDConfig(OptimizerConfig, choice="sgd"):
    name: str = "sgd"

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return self._coupled(optax.sgd(lr), n)


@dataclass
class MomentumConfig(OptimizerConfig, choice="momentum", aliases=("nesterov",)):
    name: str = "momentum"
    momentum: float = traced(0.9)
    # Nesterov's accelerated gradient (a static choice: conf/optimizer/nesterov.yaml sets it)
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("momentum")

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return self._coupled(optax.sgd(lr, momentum=n["momentum"], nesterov=self.nesterov), n)


@dataclass
class AdamConfig(OptimizerConfig, choice="adam"):
    name: str = "adam"
    b1: float = traced(0.9)
    b2: float = traced(0.999)
    eps: float = traced(1e-8)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("b1")
        self._check_fraction("b2")
        self._check_positive("eps")

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return self._coupled(optax.adam(lr, b1=n["b1"], b2=n["b2"], eps=n["eps"]), n)


@dataclass
class AdamWConfig(AdamConfig, choice="adamw"):
    name: str = "adamw"
    weight_decay: float = traced(1e-4)

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return optax.adamw(lr, b1=n["b1"], b2=n["b2"], eps=n["eps"],
                           weight_decay=n["weight_decay"], mask=_decay_mask)


@dataclass
class LambConfig(AdamConfig, choice="lamb"):
    name: str = "lamb"
    eps: float = traced(1e-6)

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return optax.lamb(lr, b1=n["b1"], b2=n["b2"], eps=n["eps"],
                          weight_decay=n["weight_decay"], mask=_decay_mask)


@dataclass
class LionConfig(OptimizerConfig, choice="lion"):
    name: str = "lion"
    lr: float = traced(3e-4)
    b1: float = traced(0.9)
    b2: float = traced(0.99)
    weight_decay: float = traced(1e-3)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("b1")
        self._check_fraction("b2")

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return optax.lion(lr, b1=n["b1"], b2=n["b2"], weight_decay=n["weight_decay"],
                          mask=_decay_mask)


@dataclass
class RMSPropConfig(OptimizerConfig, choice="rmsprop"):
    name: str = "rmsprop"
    # Decay of the running average of squared gradients
    decay: float = traced(0.9)
    eps: float = traced(1e-8)
    momentum: float = traced(0.0)
    # Divide by the centred second moment (a static choice)
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("decay")
        self._check_fraction("momentum")
        self._check_positive("eps")

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return self._coupled(optax.rmsprop(lr, decay=n["decay"], eps=n["eps"],
                                           momentum=n["momentum"], centered=self.centered), n)


@dataclass
class AdagradConfig(OptimizerConfig, choice="adagrad"):
    name: str = "adagrad"
    initial_accumulator_value: float = traced(0.1)
    eps: float = traced(1e-7)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_non_negative("initial_accumulator_value")
        self._check_positive("eps")

    def transform(self, lr: Any, n: Numbers) -> Any:
        import optax

        return self._coupled(optax.adagrad(
            lr, initial_accumulator_value=n["initial_accumulator_value"], eps=n["eps"]), n)


# ---------------------------------------------------------------------------------------------
# Schedules: fractions are of the whole run (train.epochs), so they keep their meaning when a
# sweep changes the number of epochs.
# ---------------------------------------------------------------------------------------------
@dataclass
class ScheduleConfig(Schema):
    """Learning-rate schedule, peaking at (or starting from) `optimizer.lr`."""

    group = "schedule"
    name: str = MISSING

    def __post_init__(self) -> None:
        self._check_name()

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        """The learning rate at each optimizer step (an `optax.Schedule`).

        Examples:
          >>> s = CosineScheduleConfig().schedule(1.0, {"end_ratio": 0.1}, steps_per_epoch=10,
          ...                                     total_steps=100)
          >>> [round(float(s(t)), 3) for t in (0, 50, 100)]
          [1.0, 0.55, 0.1]
        """
        raise NotImplementedError


@dataclass
class ConstantScheduleConfig(ScheduleConfig, choice="constant"):
    name: str = "constant"

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import optax

        return optax.constant_schedule(lr)


@dataclass
class StepScheduleConfig(ScheduleConfig, choice="step"):
    name: str = "step"
    # Fractions of training at which the learning rate is multiplied by gamma
    boundaries: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = traced(0.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        b = list(self.boundaries)
        self._check("boundaries", len(b) >= 1 and all(0 < x < 1 for x in b) and b == sorted(b),
                    "must be a non-empty increasing list of fractions in (0, 1)")
        self._check_positive("gamma")

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import optax

        # optax.piecewise_constant_schedule checks its scales in Python: join constants.
        pieces = [optax.constant_schedule(lr * n["gamma"] ** i)
                  for i in range(len(self.boundaries) + 1)]
        return optax.join_schedules(pieces, [round(b * total_steps) for b in self.boundaries])


@dataclass
class ExponentialScheduleConfig(ScheduleConfig, choice="exponential"):
    name: str = "exponential"
    # Factor applied to the learning rate per epoch
    decay_rate: float = traced(0.95)
    # Decay in whole-epoch steps instead of continuously
    staircase: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("decay_rate", 0 < self.decay_rate <= 1, "must be in (0, 1]")

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import jax.numpy as jnp

        # optax.exponential_decay branches on `decay_rate == 0` in Python: it cannot be traced.
        def exponential(count: Any) -> Any:
            epochs = count / steps_per_epoch
            return lr * n["decay_rate"] ** (jnp.floor(epochs) if self.staircase else epochs)

        return exponential


@dataclass
class CosineScheduleConfig(ScheduleConfig, choice="cosine"):
    name: str = "cosine"
    # Final learning rate as a fraction of optimizer.lr
    end_ratio: float = traced(0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("end_ratio", 0 <= self.end_ratio <= 1, "must be in [0, 1]")

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import optax

        return optax.cosine_decay_schedule(lr, total_steps, alpha=n["end_ratio"])


@dataclass
class WarmupCosineScheduleConfig(CosineScheduleConfig, choice="warmup_cosine"):
    name: str = "warmup_cosine"
    # Fraction of training spent warming up linearly from init_ratio * lr to lr
    warmup_fraction: float = 0.1
    init_ratio: float = traced(0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("warmup_fraction", low_open=True)
        self._check("init_ratio", 0 <= self.init_ratio <= 1, "must be in [0, 1]")

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import optax

        warmup = max(1, round(self.warmup_fraction * total_steps))
        return optax.join_schedules(
            [optax.linear_schedule(lr * n["init_ratio"], lr, warmup),
             optax.cosine_decay_schedule(lr, max(1, total_steps - warmup), alpha=n["end_ratio"])],
            [warmup])


@dataclass
class OneCycleScheduleConfig(ScheduleConfig, choice="onecycle"):
    """`optax.cosine_onecycle_schedule`: from lr/div_factor up to lr, then down to
    lr/(div_factor*final_div_factor). The two factors shape the program (optax checks them in
    Python), so they are static; lr stays traced."""

    name: str = "onecycle"
    # Fraction of training spent rising to the peak
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_fraction("pct_start", low_open=True)
        self._check("div_factor", self.div_factor >= 1, "must be >= 1")
        self._check("final_div_factor", self.final_div_factor >= 1, "must be >= 1")

    def schedule(self, lr: Any, n: Numbers, *, steps_per_epoch: int, total_steps: int) -> Any:
        import optax

        return optax.cosine_onecycle_schedule(
            total_steps, lr, pct_start=self.pct_start, div_factor=self.div_factor,
            final_div_factor=self.final_div_factor)
