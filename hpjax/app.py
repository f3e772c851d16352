"""The `hpjax` command: a Hydra app that validates the composed config and trains it.

This file is intentionally kept short: the work happens in `hpjax.train.run(cfg)`.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hpjax.cli import CONF_DIR, register
from hpjax.config import ConfigError, to_config, worst_objective

log = logging.getLogger("hpjax")
# JAX reports at INFO that it found no TPU; Hydra's logging would print that on every run.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(dict_cfg: DictConfig) -> float:
    """Trains one configuration and returns its objective for the sweeper."""
    from hpjax import train  # imports JAX: after --help and --cfg have returned

    hydra_cfg = HydraConfig.get()
    try:
        cfg = to_config(dict_cfg)
        result = train.run(cfg, hydra_cfg.runtime.output_dir)
    except ConfigError as e:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            print(f"hpjax: error: {e}", file=sys.stderr)
            sys.exit(2)
        # In a sweep this trial is recorded as failed and the others go on.
        log.error("hpjax: error: %s", e)
        train.write_result(train.Result(
            status="failed", objective=None, objective_metric=dict_cfg.objective.metric,
            objective_mode=dict_cfg.objective.mode, best_epoch=None, error=str(e)),
            hydra_cfg.runtime.output_dir)
        return worst_objective(dict_cfg.objective.mode)
    log.info("results in %s", hydra_cfg.runtime.output_dir)
    return result.objective if result.objective is not None else cfg.objective.worst


if __name__ == "__main__":
    main()
