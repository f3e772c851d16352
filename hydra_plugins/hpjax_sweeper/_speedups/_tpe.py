"""TPE whose cost stops growing with the study: it models at most `max_observations` finished
trials (300), the best tenth of them by the first objective and the most recent for the rest.

TPE fits its two densities to every finished trial at every ask, so an ask costs time in
proportion to the study. The "good" density is built from the best trials (at most 25: Optuna's
default gamma), which the window always keeps; only the "bad" density sees a sample, the most
recent trials. With the study read once per batch and each trial converted once, what is left of
an ask is the model, in proportion to the window, the same at 1,000 trials and at 10,000; why
the window is 300: docs/benchmarks.md (host overhead per trial).

A subclass of Optuna's `TPESampler`, patching nothing: its `_sample` is Optuna's, over a view
of the study (`_CachedWindow`), whose split of the trials is cached per batch. Optuna's
internals used (hence `_speedups`, behind its version check): `TPESampler._sample`,
`_get_internal_repr`, `_build_parzen_estimator`, `_get_params`, `_compute_acquisition_func`,
`_compare`, its attributes (`_gamma`, `_constant_liar`, `_rng`, ...), the module's
`_split_trials` and `default_gamma*`, and `Study._get_trials`.
"""

import heapq
import inspect
from typing import Any

import numpy as np
import optuna
from optuna.samplers._tpe import sampler as _tpe
from optuna.trial import TrialState

from ._bulk import Staged

MAX_OBSERVATIONS = 300
_SPLIT_TAKES_CONSTRAINTS = len(inspect.signature(_tpe._split_trials).parameters) == 4


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
        self._rows: dict = {}  # search space -> {finished trial's number: its internal row}

    def _sample(self, study: optuna.Study, trial: Any, search_space: dict) -> dict:
        """Optuna's `TPESampler._sample` (4.9 to 5), over the window, with the split of its
        finished trials into below and above computed once for a batch's asks
        (`_CachedWindow.split`): Optuna sorts and checks every trial it models at every ask."""
        view = _CachedWindow(study, self._max_observations, self._windows)
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        trials = view._get_trials(deepcopy=False, states=states,
                                  use_cache=not self._constant_liar)
        if self._constant_liar:  # (the trial being sampled is not its own lie)
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:  # (Optuna 5: the default depends on the objectives)
            self._gamma = (_tpe.default_gamma if len(study.directions) <= 1
                           else _tpe.default_gamma_multiobjective)
        n = sum(t.state != TrialState.RUNNING for t in trials)
        # Optuna before 5 also passes whether constraints are set
        rest = (self._constraints_func is not None,) if _SPLIT_TAKES_CONSTRAINTS else ()
        below, above = view.split(_tpe._split_trials, trials, self._gamma(n), rest)
        mpe_below = self._build_parzen_estimator(view, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(view, search_space, above, handle_below=False)
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acquisition = self._compute_acquisition_func(samples, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples, acquisition)
        return {name: dist.to_external_repr(ret[name]) for name, dist in search_space.items()}

    def _get_internal_repr(self, trials: list, search_space: dict, study: Any = None) -> dict:
        """Optuna's, with each finished trial's row computed once (an ask sees the same window
        of trials as the last, plus a few: each row was converted again at every ask). (Optuna
        before 5 passes no study, and its `_get_params` takes none.)"""
        rows_of = self._rows.setdefault(tuple(search_space.items()), {})
        if len(rows_of) > 4 * self._max_observations:
            rows_of.clear()
        rows = []
        for t in trials:
            row = rows_of.get(t.number)
            if row is None:
                params = self._get_params(t) if study is None else self._get_params(t, study)
                row = (tuple(d.to_internal_repr(params[n]) for n, d in search_space.items())
                       if search_space.keys() <= params.keys() else ())
                if t.state.is_finished():
                    rows_of[t.number] = row
            if row:
                rows.append(row)
        return {n: np.asarray([r[i] for r in rows]) for i, n in enumerate(search_space)}

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
        storage = getattr(self._study, "_storage", None)
        if isinstance(storage, Staged) and not deepcopy:  # a batch asked in bulk
            read, new = storage.pieces(states)
            key = ("read", id(read), len(read))
            if key not in self._cache:
                self._cache.clear()  # (the list it keys stays alive with its window)
                self._cache[key] = (read, self._select(read))
            return self._cache[key][1] + new
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

    def split(self, split_trials: Any, trials: list, n_below: int, rest: tuple) -> tuple:
        """TPE's split of `trials` into below and above (Optuna's `_split_trials`), its finished
        trials split once for the asks that see the same ones: the running trials (the batch's
        asks so far, for the constant liar) always go above."""
        finished, running = [], []
        for t in trials:
            (running if t.state == TrialState.RUNNING else finished).append(t)
        if not finished:
            return split_trials(self, trials, n_below, *rest)
        key = ("split", n_below, rest, len(finished), finished[0].number, finished[-1].number,
               id(finished[-1]))
        if self._cache.get(key, (None,))[0] is not finished[-1]:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (finished[-1], split_trials(self, finished, n_below, *rest))
        below, above = self._cache[key][1]
        return list(below), sorted([*above, *running], key=lambda t: t.number)
