"""Each test's CPU time, its own and its child processes', as JSON lines: a pytest plugin.

    PYTHONPATH=tests CPUPROF_OUT=/tmp/cpu.jsonl .venv/bin/pytest -p cpuprof -n 0 tests/test_app.py

Child processes count once they have been waited for (`hpjax` runs, submitit-local jobs); SLURM
jobs are the cluster's children and do not count. A session-scoped fixture counts in the first
test that uses it. `compile` is the time this process spent tracing, lowering and compiling or
loading programs (`CompileStats`), `programs` how many it built and `loaded` how many of those
came from the run's compilation cache; `start` (seconds since the epoch) and `worker`
(pytest-xdist's name) place the test on the run's timeline.
"""

import json
import os
import resource
import time

import pytest

from hpjax.engine.compile import CompileStats


def _cpu() -> tuple:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    CompileStats.install()
    (own0, children0), wall0, start = _cpu(), time.perf_counter(), time.time()
    built0 = CompileStats.seconds, CompileStats.count, CompileStats.cache_hits
    yield
    built = [round(a - b, 3) for a, b in zip(
        (CompileStats.seconds, CompileStats.count, CompileStats.cache_hits), built0, strict=True)]
    own, children = (a - b for a, b in zip(_cpu(), (own0, children0), strict=True))
    with open(os.environ.get("CPUPROF_OUT", "cpuprof.jsonl"), "a") as f:
        f.write(json.dumps({"id": item.nodeid, "self": round(own, 3),
                            "children": round(children, 3), "cpu": round(own + children, 3),
                            "wall": round(time.perf_counter() - wall0, 3), "compile": built[0],
                            "programs": built[1], "loaded": built[2], "start": round(start, 3),
                            "worker": os.environ.get("PYTEST_XDIST_WORKER", "")}) + "\n")
