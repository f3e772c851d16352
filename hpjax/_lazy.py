"""Names that load on first use, for a package's `__init__` (PEP 562)."""

import importlib
from collections.abc import Callable
from typing import Any, Union

Target = Union[str, tuple[str, str]]


def exports(package: str, table: dict[str, Target]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each name of `table` when first read: a value is the
    module that defines the name, or `(module, dotted attribute)` where it is found under
    another name. Keeps `import hpjax` free of JAX and Flax until a name is used."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = table[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        value: Any = importlib.import_module(module)
        for part in attr.split("."):
            value = getattr(value, part)
        return value

    return __getattr__
