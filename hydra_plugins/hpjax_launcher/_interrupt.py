"""SIGINT and SIGTERM under a sweeper of Hydra's (`hydra/sweeper=basic`) with the vmap launcher.

The launcher's batch stops at the next epoch boundary (checkpoints saved where
`train.checkpoint_every` is set), its jobs that did not finish end with `result.json` saying
`"status": "interrupted"`, the sweep directory is marked interrupted (`.hpjax-interrupted`),
Hydra's end-of-sweep callbacks run (`summary.csv`) and the process exits 128 + the signal (130,
143). The same command again keeps each job whose `result.json` finished with the same
overrides, and trains only the others, from their checkpoints. Under hpjax's sweeper, which
handles the signal with its study, nothing here applies.
"""

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

import hpjax.engine

log = logging.getLogger(__name__)

MARKER = ".hpjax-interrupted"  # in the sweep directory: a rerun keeps its finished jobs


def launch(impl: Any, indexed: list[tuple[int, list]]) -> list[JobReturn]:
    """Runs `impl.run_jobs(indexed)` with SIGINT/SIGTERM deferred to the next epoch boundary."""
    if hpjax.engine.signals_deferred():  # hpjax's sweeper: it marks its trials in the study itself
        return impl.run_jobs(indexed)
    sweep_dir = Path(str(impl.config.hydra.sweep.dir))
    configs = _Configs(impl, indexed)  # composed only for a rerun or an interrupt
    kept = _finished(configs, indexed) if (sweep_dir / MARKER).exists() else {}
    todo = [(n, o) for n, o in indexed if n not in kept]
    if kept:
        log.info("resuming the interrupted sweep in %s: %d of %d jobs finished before, %d to "
                 "run", sweep_dir, len(kept), len(indexed), len(todo))
    start = time.time()
    with hpjax.engine.defer_signals():
        try:
            trained = impl.run_jobs(todo) if todo else []
        except hpjax.engine.Interrupted as e:
            _stop(impl, sweep_dir, configs, todo, start, e)
    returns = dict(zip((n for n, _ in todo), trained, strict=True))
    for n, o in indexed:
        if n in kept:
            returns[n] = impl._run_job(n, o, configs[n], _kept(kept[n]))
    return [returns[n] for n, _ in indexed]


class _Configs(dict):
    """Job number -> its composed config, composed when first asked for."""

    def __init__(self, impl: Any, indexed: list[tuple[int, list]]) -> None:
        super().__init__()
        self.impl, self.overrides = impl, dict(indexed)

    def __missing__(self, n: int) -> DictConfig:
        self[n] = self.impl._compose(n, self.overrides[n])
        return self[n]


def _job_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _finished(configs: _Configs, indexed: list[tuple[int, list]]) -> dict:
    """Job number -> its result, for the jobs that finished in an earlier run with the same
    overrides."""
    kept = {}
    for n, overrides in indexed:
        job_dir = _job_dir(configs[n])
        result = hpjax.Result.read(job_dir)
        saved = job_dir / ".hydra" / "overrides.yaml"
        if result is None or result.status == "interrupted" or not saved.exists():
            continue
        if list(OmegaConf.load(saved)) == list(overrides):
            kept[n] = result
    return kept


def _kept(result: hpjax.Result) -> Callable[[DictConfig], float]:
    def task(cfg: DictConfig) -> float:
        log.info("kept from the interrupted run: %s, objective %s", result.status,
                 result.objective)
        return result.sweeper_value()

    return task


def _interrupted(reason: str) -> Callable[[DictConfig], float]:
    def task(cfg: DictConfig) -> float:
        job_dir = Path(HydraConfig.get().runtime.output_dir)
        steps = [int(p.name) for p in (job_dir / "checkpoints").glob("*") if p.name.isdigit()]
        saved = f" (checkpoint at epoch {max(steps)})" if steps else ""
        result = hpjax.Result("interrupted", None, cfg.objective.metric, cfg.objective.mode,
                        error=reason + saved)
        result.write(job_dir)
        return result.sweeper_value()

    return task


def _stop(impl: Any, sweep_dir: Path, configs: _Configs,
          todo: list[tuple[int, list]], start: float, e: hpjax.engine.Interrupted) -> None:
    """Ends the jobs that did not finish as interrupted, writes the sweep's summary, exits."""
    reason = f"stopped by {signal.Signals(e.signum).name}"
    unfinished = 0
    for n, o in todo:
        path = _job_dir(configs[n]) / "result.json"
        if path.exists() and path.stat().st_mtime >= start:
            continue  # its population ended before the signal
        unfinished += 1
        impl._run_job(n, o, configs[n], _interrupted(reason))
    (sweep_dir / MARKER).write_text(reason + "\n")
    log.warning("sweep %s: %d unfinished jobs written as interrupted; the same command again "
                "trains only them (from their checkpoints)", reason, unfinished)
    try:
        impl.hydra_context.callbacks.on_multirun_end(config=impl.config)
    finally:
        sys.exit(e.exit_code)
