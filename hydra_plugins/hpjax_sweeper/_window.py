"""TPE whose cost stops growing with the study: it models at most `max_observations` finished
trials, the best tenth of them by the first objective and the most recent for the rest.

TPE fits its two densities to every finished trial at every ask, so an ask costs time in
proportion to the study (measured in memory on the 2-core machine: 11 ms per ask and tell at
1,000 trials, 25 ms at 3,000, 104 ms at 10,000). The "good" density is built from the best
trials (at most 25: Optuna's default gamma), which the window always keeps; only the "bad"
density sees a sample, the most recent trials.
"""

import heapq
from typing import Any

import optuna
from optuna.trial import TrialState

MAX_OBSERVATIONS = 1000


class _Window:
    """The study as TPE sees it: all of it, but `_get_trials` returns the window."""

    def __init__(self, study: optuna.Study, size: int) -> None:
        self._study, self._size = study, size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = False, states: Any = None,
                    use_cache: bool = False) -> list:
        return self._select(self._study._get_trials(deepcopy=deepcopy, states=states,
                                                    use_cache=use_cache))

    def _select(self, trials: list) -> list:
        if len(trials) <= self._size:
            return trials
        finished, running = [], []
        for t in trials:
            (running if t.state == TrialState.RUNNING else finished).append(t)
        if len(finished) <= self._size:
            return trials
        return self._finished_window(finished) + running

    def _finished_window(self, finished: list) -> list:
        sign = -1.0 if self._study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        best = heapq.nsmallest(self._size // 10, (t for t in finished if t.state ==
                                                  TrialState.COMPLETE and t.values),
                               key=lambda t: sign * t.values[0])
        kept = {t.number for t in best}
        recent = [t for t in finished if t.number not in kept][-(self._size - len(best)):]
        return sorted(best + recent, key=lambda t: t.number)


class WindowedTPESampler(optuna.samplers.TPESampler):
    """`optuna.samplers.TPESampler` that models at most `max_observations` finished trials, and
    fits its densities once for the asks that see the same trials (a batch's: the sweeper reads
    the finished trials once per batch, `_batch.asking`)."""

    def __init__(self, *, max_observations: int = MAX_OBSERVATIONS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_observations = max_observations
        self._windows: dict = {}  # (id, length) of the trials read -> their window
        self._fitted: dict = {}  # (below?, search space, trial numbers) -> density

    def _sample(self, study: optuna.Study, trial: Any, search_space: dict) -> dict:
        return super()._sample(_CachedWindow(study, self._max_observations, self._windows),
                               trial, search_space)

    def _build_parzen_estimator(self, study: Any, search_space: dict, trials: list,
                                handle_below: bool) -> Any:
        key = (handle_below, tuple(search_space.items()), tuple(t.number for t in trials))
        if key not in self._fitted:
            if len(self._fitted) >= 64:
                self._fitted.clear()
            self._fitted[key] = super()._build_parzen_estimator(study, search_space, trials,
                                                                handle_below)
        return self._fitted[key]


class _CachedWindow(_Window):
    """`_Window` that computes the window of one list of trials once (the list a batch's
    asks share)."""

    def __init__(self, study: optuna.Study, size: int, cache: dict) -> None:
        super().__init__(study, size)
        self._cache = cache

    def _get_trials(self, deepcopy: bool = False, states: Any = None,
                    use_cache: bool = False) -> list:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if deepcopy or any(s == TrialState.RUNNING for s in states or ()):
            return self._select(trials)  # (its finished trials' window: cached below)
        key = (id(trials), len(trials), trials[-1].number if trials else -1)
        if key not in self._cache:
            self._cache.clear()  # (the list it keys stays alive with its window)
            self._cache[key] = (trials, self._select(trials))
        return self._cache[key][1]

    def _finished_window(self, finished: list) -> list:
        # a batch's asks see the same finished trials (in the same objects) at every ask
        key = ("finished", len(finished), finished[0].number, finished[-1].number,
               id(finished[-1]))
        if self._cache.get(key, (None,))[0] is not finished[-1]:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (finished[-1], super()._finished_window(finished))
        return self._cache[key][1]
