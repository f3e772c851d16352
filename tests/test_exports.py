"""The two APIs: `hpjax` (what users call) and `hpjax.engine` (what plugins build on). Both
resolve, both stay light to import, and hpjax's plugins use nothing else of hpjax."""

import ast
import subprocess
import sys
from pathlib import Path

import hpjax
import hpjax.engine

PLUGINS = Path(__file__).resolve().parent.parent / "hydra_plugins"
APIS = {"hpjax": set(hpjax.__all__) | {"engine"}, "hpjax.engine": set(hpjax.engine.__all__)}


def test_every_exported_name_resolves_and_is_documented_in_its_module_docstring():
    for module in (hpjax, hpjax.engine):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
            assert f"`{name}`" in module.__doc__, f"{module.__name__}.{name} is not documented"
    assert not set(hpjax.__all__) & set(hpjax.engine.__all__)
    assert len(hpjax.__all__) == 14, hpjax.__all__  # the user API stays small: curate it


def test_each_exported_name_is_declared_once_and_the_decisions_are_the_schedulers():
    """A name exported twice in `_EXPORTS` silently takes the later module's object:
    `hpjax.engine.Stop` must be the scheduler's decision, not the exit of `hpjax.errors`."""
    from hpjax.engine.schedulers import base

    for init in (Path(hpjax.__file__), Path(hpjax.engine.__file__)):
        exports = next(node.value for node in ast.walk(ast.parse(init.read_text()))
                       if isinstance(node, ast.AnnAssign | ast.Assign)
                       and "_EXPORTS" in ast.unparse(node.targets[0] if isinstance(
                           node, ast.Assign) else node.target))
        keys = [k.value for k in exports.keys]
        assert len(keys) == len(set(keys)), (init, sorted(k for k in keys if keys.count(k) > 1))
    assert hpjax.engine.Stop is base.Stop and hpjax.engine.CONTINUE is base.CONTINUE


def test_importing_either_api_imports_neither_jax_nor_flax():
    probe = ("import sys, hpjax, hpjax.engine; "
             "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stderr


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return node.id if isinstance(node, ast.Name) else ""


def _uses(path: Path) -> list[str]:
    """What a module takes from hpjax: imports, `hpjax.x.y` attributes and string annotations."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            uses += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "hpjax"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hpjax":
            uses += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute) and _dotted(node).startswith("hpjax."):
            uses.append(_dotted(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("hpjax.") and node.value.isascii() \
                and all(p.isidentifier() for p in node.value.split(".")):
            uses.append(node.value)
    return uses


def _allowed(use: str) -> bool:
    if use.startswith("import "):
        return use[len("import "):] in APIS
    module, _, name = use.rpartition(".")
    if module in APIS:
        return name in APIS[module]
    # `hpjax.Result.read` and the like: an attribute of a public name (not of the `engine` module)
    return any(use.startswith(f"{m}.{n}.") for m in APIS for n in APIS[m] - {"engine"})


def test_plugins_import_only_the_user_and_plugin_apis():
    seen = set()
    for path in sorted(PLUGINS.rglob("*.py")):
        uses = _uses(path)
        seen.update(uses)
        bad = [u for u in uses if not _allowed(u)]
        assert not bad, f"{path.relative_to(PLUGINS)} uses hpjax internals: {bad}"
    # the walk sees the plugins' real uses (an empty walk would pass anything)
    assert {"import hpjax.engine", "hpjax.engine.train_jobs", "hpjax.validate"} <= seen


def test_the_import_check_refuses_internals():
    assert not _allowed("hpjax.results.background_writes")
    assert not _allowed("import hpjax.engine.signals")
    assert not _allowed("hpjax.engine.signals")
    assert not _allowed("hpjax.engine.batch.plan")
    assert not _allowed("hpjax.plan")
    assert _allowed("hpjax.engine.plan") and _allowed("hpjax.Result")
