"""Every use of Optuna's internals by the sweeper, in one place, each with Optuna's public path
as its fallback. Selected here, once: `enabled()`.

What they save (host time per trial; docs/plugins.md has the figures and the why):

- `_session.transaction`: a batch's storage writes in one database transaction (Optuna commits
  each write: a dozen commits a trial), by swapping the RDB storage's `scoped_session`;
  fallback: Optuna's commits.
- `_session.asking`: a batch's asks read the study once (Optuna reads every trial at each ask
  and each parameter), by shadowing `Study._get_trials`; fallback: Optuna's reads.
- `_session.count`: finished and running trials counted by SQL over Optuna's tables; fallback:
  the trials loaded and counted.
- `_bulk`: a batch's new trials asked against an in-memory `Staged` storage and written as rows
  of Optuna's ORM models in one transaction, its results likewise; fallback: `study.ask` and
  the storage's writes, one by one.
- `_attrs.write`: a trial's learning curve and attributes as ORM rows in one transaction;
  fallback: `set_trial_intermediate_value` / `set_trial_user_attr`, a commit each.
- `trial_id`: the storage id a trial object carries (`Trial._trial_id`,
  `FrozenTrial._trial_id`); fallback: the storage's `get_trial_id_from_study_id_trial_number`,
  a query a trial.
- `_tpe.WindowedTPESampler`: a `TPESampler` subclass that models at most 300 finished trials
  (the best tenth and the most recent), fitting once per batch; fallback: Optuna's
  `TPESampler`, which models every trial (the same proposals while a study has at most 300).

Nothing here patches a module of Optuna's: the TPE window is a subclass, and the session and
the study reads are swapped on one study object for the length of a `with` block.

`enabled()` is true where the installed Optuna is in the range these are tested with (`OPTUNA`:
the floor in pyproject.toml, run by scripts/check_floors.sh, to the newest, run by CI) and the
environment variable `HPJAX_SPEEDUPS` is not `off`. tests/plugins/test_conformance.py runs a
sweep both ways and asserts the same study rows and job files.
"""

import functools
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Optional

OPTUNA = ("4.9", "6")  # known-good versions: [lowest, first untested)
SWITCH = "HPJAX_SPEEDUPS"  # `off`: Optuna's public path everywhere (and Hydra's, in the launcher)


def in_range(installed: str, known: tuple[str, str]) -> bool:
    """Whether a version (`5.1.0`, `4.9.0rc1`) is in [known[0], known[1]), by its numbers."""
    def numbers(v: str) -> tuple:
        return tuple(int(re.match(r"\d*", part).group() or 0) for part in v.split(".")[:3])

    return numbers(known[0]) <= numbers(installed) < numbers(known[1])


@functools.cache
def _known_good() -> bool:
    from importlib.metadata import version

    return in_range(version("optuna"), OPTUNA)


def enabled() -> bool:
    """Whether the sweeper uses Optuna's internals (`HPJAX_SPEEDUPS` not `off`, a known-good
    Optuna) or only its public API."""
    return os.environ.get(SWITCH, "on").lower() != "off" and _known_good()


# -- the selection: each entry point says whether its speedup ran; the caller's fallback runs
# -- otherwise -----------------------------------------------------------------------------------
def tpe_sampler(*, max_observations: int = 300, **kwargs: Any) -> Any:
    """TPE with the window where enabled, else Optuna's `TPESampler(**kwargs)`."""
    if enabled():
        from ._tpe import WindowedTPESampler

        return WindowedTPESampler(max_observations=max_observations, **kwargs)
    import optuna

    return optuna.samplers.TPESampler(**kwargs)


def trial_id(trial: Any) -> Optional[int]:
    """The storage id an `optuna.Trial` or `FrozenTrial` carries (enabled), else None: the
    caller asks the storage (`_storage.trial_id`)."""
    return trial._trial_id if enabled() else None


def bulk_applies(study: Any) -> bool:
    """Whether a batch of this study is asked in bulk (`bulk_ask`)."""
    if not enabled():
        return False
    from . import _bulk

    return _bulk.applies(study)


def bulk_ask(study: Any, n: int, ask_one: Callable, user_attrs: Callable[[int], dict],
             heartbeat: bool) -> list:
    """`n` trials asked in memory and written in one transaction (where `bulk_applies`)."""
    from . import _bulk

    return _bulk.ask(study, n, ask_one, user_attrs, heartbeat)


def tells_in_bulk(study: Any) -> bool:
    """Whether a batch's results are written in bulk (`bulk_tell`)."""
    if not enabled():
        return False
    from . import _bulk

    return _bulk.tells_in_bulk(study)


def bulk_tell(study: Any, outcomes: list) -> list[int]:
    """Writes outcomes (`_bulk.Outcome`-like) in one transaction; the ids it refused."""
    from . import _bulk

    return _bulk.tell(study, outcomes)


def transaction(study: Any) -> Any:
    """A context: every storage write in it, one transaction (enabled), else Optuna's commits."""
    if not enabled():
        return nullcontext()
    from . import _session

    return _session.transaction(study)


@contextmanager
def asking(study: Any) -> Iterator[None]:
    """A context: a batch's asks read the study once (enabled), else as Optuna reads it."""
    if not enabled():
        yield
        return
    from . import _session

    with _session.asking(study):
        yield


def count(study: Any, final: tuple) -> Optional[tuple[int, int]]:
    """(finished, running) counted by the database (FAIL counts with a `status` in `final`), or
    None: the caller loads and counts."""
    if not enabled():
        return None
    from . import _session

    return _session.count(study, final)


def write_attrs(study: Any, trial_id: int, values: dict, attrs: dict) -> bool:
    """Intermediate values and user attributes in one transaction; False: not done, the caller
    writes them through the storage."""
    if not enabled():
        return False
    from . import _attrs

    return _attrs.write(study, trial_id, values, attrs)


def finish(study: Any, trial_id: int, state: Any, values: Optional[list]) -> bool:
    """A trial's final state straight to the storage where the sampler does nothing after a
    trial; False: not done, the caller tells the study."""
    if not enabled():
        return False
    from . import _session

    return _session.finish(study, trial_id, state, values)
