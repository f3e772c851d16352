"""A benchmark script rewrites its own section of docs/benchmarks.md and nothing else."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from _benchdoc import replace_section  # noqa: E402


def test_a_section_is_replaced_whole_and_the_rest_kept():
    text = ("# Benchmarks\n\nintro\n\n<!-- bench: a -->\n## A\n\nold a\n<!-- /bench: a -->\n\n"
            "<!-- bench: b -->\n## B\n\nold b\n<!-- /bench: b -->\n\nby hand\n")
    new = replace_section(text, "a", "## A\n\nnew a $1 \\1\n")
    assert new == text.replace("old a", "new a $1 \\1")
    assert replace_section(new, "c", "## C") == (
        new + "\n<!-- bench: c -->\n## C\n<!-- /bench: c -->\n")


def test_every_bench_script_has_its_section_in_the_docs():
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    for script in sorted((ROOT / "scripts").glob("bench_*.py")):
        name = script.stem
        assert doc.count(f"<!-- bench: {name} -->") == 1, name
        assert doc.count(f"<!-- /bench: {name} -->") == 1, name
        assert f"`scripts/{script.name}`" in doc, name
