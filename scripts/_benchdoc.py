"""A benchmark's section of docs/benchmarks.md, written by the script that measured it.

Each `scripts/bench_<name>.py` owns the part of docs/benchmarks.md between `<!-- bench: NAME -->`
and `<!-- /bench: NAME -->`: `write_section` replaces it whole with the script's heading, the
date, commit and machine of this run, the command, and the table it printed, so the figures in
the docs are always one run's, and nothing else in the file changes.
"""

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def provenance() -> str:
    """`2026-12-07, commit 0bf41df (+ local changes), Linux x86_64, 2 CPUs (load average 3.1),
    jax cpu (cpu)`: the load says how far to trust a timing taken on a shared machine."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hpjax",
                                "hydra_plugins", "scripts", "conf"],
                               capture_output=True, text=True, check=True).stdout.strip()
        commit = f"commit {commit}" + (" (+ local changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        commit = "no git commit"
    import jax

    device = jax.devices()[0]
    return (f"{datetime.date.today().isoformat()}, {commit}, {platform.system()} "
            f"{platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}),"
            f" jax {device.platform} ({device.device_kind})")


def replace_section(text: str, name: str, section: str) -> str:
    """`text` with the section `name` (its markers kept) holding `section`; a section not there
    yet is appended."""
    start, end = f"<!-- bench: {name} -->", f"<!-- /bench: {name} -->"
    block = f"{start}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + f"\n\n{block}\n"


def write_section(name: str, title: str, command: str, body: str, doc: Path = DOC) -> None:
    """Writes this run's `body` (markdown: the printed table) as section `name` of `doc`."""
    section = (f"## {title}\n\nMeasured {provenance()}, by `{command}`.\n\n{body.strip()}\n")
    doc.write_text(replace_section(doc.read_text(), name, section))
    print(f"wrote section '{name}' of {doc}")
