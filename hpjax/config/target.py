"""`_target_` configs: your own model (a Flax Linen or NNX module class, an Equinox module
class, or a function returning `(init, apply)`) or data function, named by import path.

```yaml
# conf/model/resmlp.yaml (in a folder on Hydra's search path)
_target_: mypkg.models.ResMLP   # a flax.linen.Module (or nnx.Module, eqx.Module) class
features: 256                   # static: a constructor argument, part of the program's signature
dropout: 0.1
num_classes: ${data.num_classes}
_traced_: [dropout]             # these arguments reach the module as traced JAX scalars
```

Such a node has no schema of its own: `to_config` makes a dataclass for it from its keys, with
the `_traced_` keys as traced fields (`hpjax.config._schema.traced`) and every other key static,
so the rule of `hpjax.engine.hparams` (what compiles, what is a number) holds for it unchanged. A
data node (`_target_: mypkg.data.load`) passes its own keys to the function as keyword arguments and
keeps the keys of `DataConfig` (`val_fraction`, `num_classes`, ...) for hpjax.
"""

import dataclasses
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from hpjax.config._schema import TRACED, ConfigError, Schema
from hpjax.config.data import DataConfig
from hpjax.config.model import ModelSpec

TARGET, TRACED_KEYS = "_target_", "_traced_"
# Constructor arguments hpjax fills from the `activation` group when the config leaves them out
ACTIVATION_FIELDS = ("activation", "negative_slope")


def locate(path: str, key: str) -> Any:
    """The object at a dotted import path; the working directory is searched last (as
    `python -m` would), so a project's own package imports without installing it."""
    module, _, attr = str(path).rpartition(".")
    if not module:
        raise ConfigError(key, path, "must be a dotted import path such as mypkg.models.ResMLP")
    try:
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as e:
            cwd = os.getcwd()
            if cwd in sys.path or not module.startswith(str(e.name)):
                raise
            sys.path.append(cwd)
            obj = importlib.import_module(module)
        return getattr(obj, attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(key, path, f"does not import ({type(e).__name__}: {e}); is its "
                          "package installed or in the working directory?") from None


KINDS = "a flax.linen.Module, flax.nnx.Module or equinox.Module class, or a function " \
    "returning (init, apply)"
# Constructor arguments each kind of module takes from hpjax, not from the config
_OWN_ARGS = {"linen": ("parent", "name"), "nnx": ("rngs",), "equinox": ("key",),
             "functions": ()}


def model_kind(obj: Any) -> Optional[str]:
    """Which kind of model `obj` is, by its type: "linen", "nnx", "equinox" or "functions"
    (a function returning `(init, apply)`); None: none of these. A library that is not
    imported yet cannot have made `obj`, so none is imported here for the check."""
    if isinstance(obj, type):
        for kind, module, name in (("linen", "flax.linen", "Module"),
                                   ("nnx", "flax.nnx", "Module"),
                                   ("equinox", "equinox", "Module")):
            lib = sys.modules.get(module)
            if lib is not None and issubclass(obj, getattr(lib, name)):
                return kind
        return None
    return "functions" if inspect.isfunction(obj) else None


def constructor_arguments(obj: Any, kind: str) -> Optional[list[str]]:
    """The names of the arguments the config may set; None: any (a `**kwargs`)."""
    if kind == "linen":
        names = [f.name for f in dataclasses.fields(obj)]
    else:
        # a class's own __init__ (NNX's metaclass call takes anything)
        params = list(inspect.signature(obj.__init__ if isinstance(obj, type) else obj)
                      .parameters.values())[isinstance(obj, type):]
        if any(p.kind == p.VAR_KEYWORD for p in params):
            return None
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [n for n in names if n not in _OWN_ARGS[kind]]


def _node_name(target: str) -> str:
    return str(target).rpartition(".")[2] or str(target)


@dataclass
class TargetModelConfig(Schema):
    """A model config with `_target_`: a model (`model_kind`) and its constructor arguments
    (the fields of the dataclass `to_config` derives for it)."""

    group = "model"
    input_rank: ClassVar = None
    # Import path of the model: a Linen, NNX or Equinox module class, or a function
    _target_: str = ""
    # Constructor arguments that enter the program as traced scalars
    _traced_: tuple = ()

    @property
    def name(self) -> str:
        return _node_name(self._target_)

    def kwargs(self) -> dict:
        """The constructor arguments of the config (static and traced)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in (TARGET, TRACED_KEYS)}

    def module_class(self) -> type:
        return locate(self._target_, "model._target_")

    def __post_init__(self) -> None:
        import flax.linen  # noqa: F401  (the one kind whose library hpjax always has)

        cls = self.module_class()
        kind = model_kind(cls)
        if kind is None:
            raise ConfigError("model._target_", self._target_, f"must name {KINDS}")
        args = constructor_arguments(cls, kind)
        if args is None:
            return
        for key in self._traced_:
            if key not in args:
                raise ConfigError("model._traced_", key, f"is not a constructor argument of "
                                  f"{self._target_} (its arguments: {', '.join(args)}): "
                                  "trace one of those, or add it to the constructor")
        for key, value in self.kwargs().items():
            if key not in args:
                raise ConfigError(f"model.{key}", value, f"is not a constructor argument of "
                                  f"{self._target_} (its arguments: {', '.join(args)}): "
                                  "remove it from the model config, or add it to the constructor")

    def spec(self, num_classes: int) -> ModelSpec:
        """What the engine builds the module from inside the program (`hpjax.engine.model`)."""
        cls = self.module_class()
        traced = tuple(self._traced_)
        static = {k: v for k, v in self.kwargs().items() if k not in traced}
        fields = set(constructor_arguments(cls, model_kind(cls)) or ())
        fill = tuple(k for k in ACTIVATION_FIELDS if k in fields and k not in static
                     and k not in traced)
        return ModelSpec(cls, static, traced, fill)


@dataclass
class TargetDataConfig(DataConfig):
    """A data config with `_target_`: a function returning `(x, y)` or a dict of splits; the
    node's keys other than `DataConfig`'s are its keyword arguments."""

    # Import path of the function
    _target_: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        fn = locate(self._target_, "data._target_")
        if not callable(fn):
            raise ConfigError("data._target_", self._target_, "must name a function")
        try:
            inspect.signature(fn).bind(**self.kwargs())
        except TypeError as e:
            raise ConfigError("data._target_", self._target_,
                              f"does not take the config's arguments: {e}") from None
        except ValueError:  # no signature to check (a builtin): the call will tell
            pass

    def kwargs(self) -> dict:
        base = {f.name for f in dataclasses.fields(DataConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in base and f.name != TARGET}

    def arrays(self) -> Any:
        return locate(self._target_, "data._target_")(**self.kwargs())


_CLASSES: dict[tuple, type] = {}


def _frozen(value: Any) -> Any:
    """Lists become tuples: constructor arguments that hash and do not change."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def target_config(group: str, node: dict) -> Schema:
    """The validated config object of a `_target_` node (a plain dict, interpolations resolved).

    Raises:
      ConfigError: the target does not import, a key is not an argument, a traced key is not
        a number.
    """
    node = dict(node)
    target = node.pop(TARGET)
    traced = node.pop(TRACED_KEYS, None) or []
    base: type = TargetModelConfig if group == "model" else TargetDataConfig
    if group != "model" and traced:
        raise ConfigError(f"{group}.{TRACED_KEYS}", traced, "only model configs trace keys")
    if not isinstance(traced, (list, tuple)) or not all(isinstance(k, str) for k in traced):
        raise ConfigError(f"{group}.{TRACED_KEYS}", traced, "must be a list of key names")
    base_names = {f.name for f in dataclasses.fields(base)}
    own = {k: _frozen(v) for k, v in node.items() if k not in base_names}
    for key in traced:
        if key not in own:
            raise ConfigError(f"{group}.{TRACED_KEYS}", key,
                              f"must name constructor arguments set in the {group} config: "
                              f"{', '.join(own) or 'none is set'}")
        value = own[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{group}.{key}", value, "is traced (in _traced_): it must be a "
                              "number")
    signature = (base, str(target), tuple(own), tuple(traced))
    if signature not in _CLASSES:
        fields = [(k, Any, dataclasses.field(metadata={TRACED: {
            "dtype": "float32", "index_of": None, "aliases": {}}})) if k in traced
            else (k, Any, dataclasses.field()) for k in own]
        _CLASSES[signature] = dataclasses.make_dataclass(
            f"{_node_name(target)[:1].upper()}{_node_name(target)[1:]}Config", fields,
            bases=(base,), kw_only=True)
    values = {k: _frozen(v) for k, v in node.items() if k in base_names}
    if group == "model":
        values[TRACED_KEYS] = tuple(traced)
    else:
        values.setdefault("name", _node_name(target))
    return _CLASSES[signature](**{TARGET: str(target)}, **values, **own)
