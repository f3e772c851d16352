"""What a user can name stays there: every name in a public `__all__` resolves, and the scripts
under scripts/ (pytest does not collect them) stay runnable: each one that takes arguments
answers --help, and the others load (their imports and definitions) without running."""

import importlib
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def public_modules():
    """Every package or module of hpjax and its plugins that declares `__all__`."""
    for path in sorted([*ROOT.glob("hpjax/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]):
        if "\n__all__" in path.read_text():
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("module", list(public_modules()))
def test_every_name_in_a_public_all_resolves(module):
    mod = importlib.import_module(module)
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"
    if module == "hpjax":  # loaded on first use; dir() offers them for completion
        assert set(mod.__all__) <= set(dir(mod))
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            mod.nope  # noqa: B018


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_each_script_answers_help_or_loads(script, monkeypatch, capsys):
    path = SCRIPTS / script
    source = path.read_text()
    compile(source, str(path), "exec")
    monkeypatch.syspath_prepend(str(SCRIPTS))  # they import each other (_benchdoc)
    if "argparse" in source:
        monkeypatch.setattr(sys, "argv", [str(path), "--help"])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(path), run_name="__main__")
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith("usage: ")
    elif 'if __name__ == "__main__":' in source:
        functions = runpy.run_path(str(path), run_name="loaded_by_a_test")
        assert callable(functions["main"])
    else:  # a helper module of the scripts, or one that runs on import (_bare_sweep.py)
        assert script.startswith("_")
