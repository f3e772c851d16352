"""How hpjax stops: one line on stderr and an exit code that tells the truth, never a traceback
for a user's mistake.

Exit codes of the `hpjax` command (docs/faults.md):

  0    the run or sweep ran; every trial finished (diverged and pruned trials are outcomes)
  1    a bug in hpjax: Python's traceback (an error of your own model or data function fails
       its trials instead: 3 or 4)
  2    a user error found before anything ran (a bad value, a missing package, a data path that
       cannot be read, a storage that cannot be written): nothing was written
  3    the sweep ran, but some trials failed with an error (the others are results)
  4    every trial of the sweep failed with an error (the common error is said once, with its
       count)
  5    a full or read-only disk (or quota) stopped the sweep where it writes the study or the
       report: every finished trial's files are kept, and the same command again, once there
       is room, resumes
  130, 143   stopped by SIGINT or SIGTERM (the same command again resumes)

`hpjax.sweep` raises `SweepError` (its `exit_code` 2, 4 or 5), and returns a `Sweep` whose `failed`
and `exit_code` say how many trials failed when some did (3); `hpjax.train` raises `ConfigError`
for 2.
"""

import contextlib
import errno
import linecache
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, Optional

USER_ERROR, SOME_FAILED, ALL_FAILED, DISK_FAULT = 2, 3, 4, 5


# Whether a sweep's end stops with its exit code (3, 4) as a `Stop`: set by the `hpjax` command
# and inside `hpjax.sweep`; a Hydra multirun called otherwise (a test's, an app of your own with
# hpjax's report callback) ends normally, its caller reading the sweep's files.
verdicts = {"exit": False}


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Within it, a sweep that ran stops with exit code 3 or 4 when trials failed."""
    before = verdicts["exit"]
    verdicts["exit"] = True
    try:
        yield
    finally:
        verdicts["exit"] = before


class Stop(SystemExit):
    """Stops the process with `code` after its line was printed: a SystemExit, so that Hydra
    (which prints the traceback of any Exception, and wraps those of a plugin's or callback's
    constructor) lets it through to the exit; the Python API turns it into a `SweepError`."""

    def __init__(self, message: str, code: int = USER_ERROR) -> None:
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def stop(message: str, code: int = USER_ERROR) -> NoReturn:
    """Prints `hpjax: error: <message>` on stderr and stops with `code`."""
    print(f"hpjax: error: {message}", file=sys.stderr, flush=True)
    raise Stop(message, code)


class SweepError(RuntimeError):
    """A sweep run by `hpjax.sweep` that could not run (`exit_code` 2: a user error, nothing
    was written), whose every trial failed (4: `sweep` holds what it left), or that a full or
    read-only disk stopped (5: the same call again, once there is room, resumes)."""

    def __init__(self, message: str, exit_code: int, sweep: Any = None) -> None:
        super().__init__(message)
        self.exit_code, self.sweep = exit_code, sweep


_OWN = tuple(str(Path(__file__).resolve().parent.parent / p) for p in (
    "hpjax/", "hydra_plugins/hpjax_"))


def is_user_error(e: BaseException) -> bool:
    """Whether `e` is a check of hpjax's own on what the user asked for: a ValueError raised by
    an explicit `raise` statement in hpjax or its plugins (house style: user-facing checks raise
    ValueError; internal invariants assert). A ValueError from a library, or one that a
    computation in hpjax raised (`int("x")`), is a bug and keeps its traceback."""
    if not isinstance(e, ValueError) or e.__traceback__ is None:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return path.startswith(_OWN) and line.startswith("raise ")


_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
# SQLite's words for the same faults (its own errors carry no errno)
_DISK_WORDS = ("database or disk is full", "readonly database", "disk i/o error")


def disk_fault(e: BaseException) -> Optional[str]:
    """The fault of a full or read-only disk (or quota) behind `e`, as one line (its cause chain
    is searched: Optuna and SQLAlchemy wrap SQLite's error twice), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            where = f" ({e.filename})" if e.filename else ""
            return f"{type(e).__name__}: {e.strerror}{where}"
        text = str(e).splitlines()[0].lower() if str(e) else ""
        if type(e).__module__ == "sqlite3" and any(w in text for w in _DISK_WORDS):
            return f"sqlite3.{type(e).__name__}: {str(e).splitlines()[0]}"
        e = e.__cause__ or e.__context__
    return None
