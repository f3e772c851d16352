"""Schemas of the `model` and `activation` groups."""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from hpjax.config._schema import Schema, traced

ACTIVATIONS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "sigmoid", "softplus")
ACTIVATION_ALIASES = {"swish": "silu"}
NORMS = ("none", "layer", "rms")


@dataclass(frozen=True)
class ModelSpec:
    """What the engine builds a model from (`hpjax.engine.model.build`): the module class or its
    import path, the static constructor arguments, the traced ones, and the activation fields
    hpjax fills. `trusted`: hpjax's own modules, which skip the checks of a user's."""

    target: Any
    static: dict
    traced: tuple = ()
    fill: tuple = ()
    trusted: bool = False


@dataclass
class ModelConfig(Schema):
    group = "model"
    # The rank of one sample the model needs (3: height, width, channels); None: any
    input_rank: ClassVar[Optional[int]] = None
    name: str = MISSING
    # Dropout rate after every hidden activation
    dropout: float = traced(0.0)
    # Normalisation before every hidden activation
    norm: str = "none"

    def __post_init__(self) -> None:
        self._check_name()
        self._check_fraction("dropout")
        self._check_choice("norm", NORMS)

    def spec(self, num_classes: int) -> "ModelSpec":
        """The model as a `_target_` module is built (`hpjax.engine.model.build`): this config's
        static keys as constructor arguments, `dropout` traced, the activation filled."""
        raise NotImplementedError

    def _target(self, cls_name: str, **static: Any) -> "ModelSpec":
        return ModelSpec(f"hpjax.nn.models.{cls_name}", {**static, "norm": self.norm},
                         ("dropout",), ("activation", "negative_slope"), trusted=True)


@dataclass
class MLPConfig(ModelConfig, choice="mlp"):
    name: str = "mlp"
    # Number of hidden layers (ignored when width is a list)
    num_layers: int = 2
    # Units per hidden layer: one integer for every layer, or a list such as [256, 128]
    width: Any = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        w = self.width
        ok = (isinstance(w, int) and not isinstance(w, bool) and w >= 1) or (
            isinstance(w, (list, tuple)) and len(w) >= 1
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w))
        self._check("width", ok, "must be an integer >= 1 or a non-empty list of them")
        if isinstance(w, int):
            self._check("num_layers", self.num_layers >= 1, "must be an integer >= 1")

    @property
    def widths(self) -> tuple:
        if isinstance(self.width, int):
            return (self.width,) * self.num_layers
        return tuple(self.width)

    def spec(self, num_classes: int) -> ModelSpec:
        return self._target("MLP", widths=self.widths, num_classes=num_classes)


@dataclass
class CNNConfig(ModelConfig, choice="cnn"):
    input_rank = 3
    name: str = "cnn"
    # Output channels of each conv layer
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    # 2x2 max pooling after every conv layer (skipped once the image is 1 pixel wide)
    pool: bool = True
    # Units of the dense layer before the classifier
    width: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("channels", len(self.channels) >= 1 and min(self.channels) >= 1,
                    "must be a non-empty list of integers >= 1")
        self._check("kernel_size", self.kernel_size >= 1, "must be an integer >= 1")
        self._check("width", self.width >= 1, "must be an integer >= 1")

    def spec(self, num_classes: int) -> ModelSpec:
        return self._target("CNN", channels=tuple(self.channels), kernel_size=self.kernel_size,
                            pool=self.pool, width=self.width, num_classes=num_classes)


@dataclass
class CNN1DConfig(CNNConfig, choice="cnn1d"):
    """The CNN on 1-D signals of shape (length, channels), e.g. data=mnist1d."""

    input_rank = 2
    name: str = "cnn1d"


@dataclass
class ActivationConfig(Schema, choice="activation"):
    group = "activation"
    # One of ACTIVATIONS (swish is silu), traced as its index into a `lax.switch`
    name: str = traced("relu", index_of=ACTIVATIONS, aliases=ACTIVATION_ALIASES)
    # Slope for negative inputs, used by leaky_relu
    negative_slope: float = traced(0.01)

    def __post_init__(self) -> None:
        self._check_choice("name", ACTIVATIONS + tuple(ACTIVATION_ALIASES))
        self._check("negative_slope", 0 <= self.negative_slope < 1, "must be in [0, 1)")

    @property
    def index(self) -> int:
        return ACTIVATIONS.index(ACTIVATION_ALIASES.get(self.name, self.name))
