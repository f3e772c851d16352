"""The README's commands stay true: CI runs exactly its test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()
    assert ci.endswith("pytest -q")


def test_readme_main_command_runs_the_qmc_preset():
    assert ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/hpjax -m search=qmc"
            in (ROOT / "README.md").read_text())
    assert "README's main command" in (ROOT / "conf" / "search" / "qmc.yaml").read_text()


def test_wheel_packages_every_config_group():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    groups = {f"hpjax.conf.{p.name}" for p in (ROOT / "conf").iterdir() if p.is_dir()}
    assert groups <= set(packages)
