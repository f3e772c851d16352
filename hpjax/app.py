"""The `hpjax` command: a Hydra app that validates the composed config and trains it.

This file is intentionally kept short: the work happens in `hpjax.engine.jobs`.
"""

import gc
import logging
import sys
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hpjax.cli import CONF_DIR, register, sweep_argv

if TYPE_CHECKING:
    from hpjax.config import Config
    from hpjax.engine.jobs import JobEnd

log = logging.getLogger("hpjax")
GC_THRESHOLD = 10_000  # objects made between two young-generation collections


def collect_less() -> None:
    """Python's young-generation collection runs every 700 new objects (its default) and walks
    each of them still alive: composed and validated configs (OmegaConf trees), a study's trials
    and a population's results outlive most collections and are walked again and again. Every
    GC_THRESHOLD new objects instead: less host CPU per trial (docs/benchmarks.md)."""
    threshold, *older = gc.get_threshold()
    gc.set_threshold(max(threshold, GC_THRESHOLD), *older)


def train_task(dict_cfg: DictConfig) -> float:
    """Trains one configuration and returns its objective for the sweeper."""
    from hpjax.config import ConfigError, to_config

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # the launcher that ran this job (basic, submitit_slurm, ...); a single run: "basic"
    launcher = (hydra_cfg.runtime.choices.get("hydra/launcher") or "basic") if multirun \
        else "basic"
    try:
        end = _train(to_config(dict_cfg), hydra_cfg.runtime.output_dir, launcher)
    except ConfigError as e:
        if not multirun:
            print(f"hpjax: error: {e}", file=sys.stderr)
            sys.exit(2)
        from hpjax.engine.jobs import JobEnd

        end = JobEnd(error=e)  # in a sweep the trial fails and the others go on
    value = end(dict_cfg)
    log.info("results in %s", hydra_cfg.runtime.output_dir)
    return value


def _train(cfg: "Config", output_dir: str, launcher: str) -> "JobEnd":
    """Trains a validated config; JAX is imported here, so a bad value fails without it."""
    from hpjax.engine.compile import enable_compilation_cache
    from hpjax.engine.jobs import train_one

    enable_compilation_cache()
    return train_one(cfg, output_dir, launcher)


train_task.hpjax_task = True  # how hpjax's launchers recognise it (not by identity)

_hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR),
                         config_name="config")(train_task)


def _not_ocdbt_merge(record: logging.LogRecord) -> bool:
    """Orbax warns on every single-process save that it found no per-process files to merge."""
    return "Skipping merge of OCDBT checkpoints" not in record.getMessage()


def main() -> None:
    """The `hpjax` command. Hydra's ConfigStore is filled here, not on import; JAX's CPU devices
    are set when training first needs JAX (`hpjax.use_cpu_cores`), so `--help` and `--cfg` stay
    quick."""
    # JAX reports at INFO that it found no TPU, and Orbax (through absl) five lines per saved
    # checkpoint; Hydra's logging would print them on every run.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("absl").addFilter(_not_ocdbt_merge)
    # A full or read-only disk under a job's log file: the sweep says so in one line (exit code
    # 5, hpjax.errors), not with a traceback for each record logged to it
    logging.raiseExceptions = False
    collect_less()
    register()
    sys.argv[1:] = sweep_argv(sys.argv[1:])
    from hpjax.errors import exit_codes

    with exit_codes():  # 3, 4 when a sweep's trials failed (hpjax.errors)
        _hydra_main()


if __name__ == "__main__":
    main()
