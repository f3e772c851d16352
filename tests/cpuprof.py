"""Each test's CPU time, its own and its child processes', as JSON lines: a pytest plugin.

    PYTHONPATH=tests CPUPROF_OUT=/tmp/cpu.jsonl .venv/bin/pytest -p cpuprof -n 0 tests/test_app.py

Child processes count once they have been waited for (`hpjax` runs, submitit-local jobs); SLURM
jobs are the cluster's children and do not count. A session-scoped fixture counts in the first
test that uses it.
"""

import json
import os
import resource
import time

import pytest


def _cpu() -> tuple:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    (own0, children0), wall0 = _cpu(), time.perf_counter()
    yield
    own, children = (a - b for a, b in zip(_cpu(), (own0, children0), strict=True))
    with open(os.environ.get("CPUPROF_OUT", "cpuprof.jsonl"), "a") as f:
        f.write(json.dumps({"id": item.nodeid, "self": round(own, 3),
                            "children": round(children, 3), "cpu": round(own + children, 3),
                            "wall": round(time.perf_counter() - wall0, 3)}) + "\n")
