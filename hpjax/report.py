"""The end of a sweep: a ranked table of its trials, printed from their `result.json` files."""

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("hpjax")


def read_trials(sweep_dir: Path) -> list[dict]:
    """One dict per job directory: its number, overrides and `result.json` (or status missing)."""
    trials = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
        result_file = job / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {
            "status": "failed", "objective": None}
        trials.append({"job": int(job.name), "overrides": " ".join(overrides), **result})
    return trials


def rank(trials: list[dict]) -> list[dict]:
    """Finished trials best first (by each trial's own objective mode), then the others."""
    ok = [t for t in trials if t.get("status") == "ok" and t.get("objective") is not None]
    sign = -1 if ok and ok[0].get("objective_mode") == "max" else 1
    ok.sort(key=lambda t: (sign * t["objective"], t["job"]))
    return ok + [t for t in trials if t not in ok]


def format_table(trials: list[dict], top: int = 10) -> Any:
    from rich.table import Table

    ranked = rank(trials)
    metric = next((t["objective_metric"] for t in ranked if "objective_metric" in t), "objective")
    table = Table(title=f"{len(trials)} trials, ranked by {metric}")
    for name in ("rank", "job", "overrides", "status", metric, "test/accuracy", "epochs",
                 "time s"):
        table.add_column(name, justify="left" if name in ("overrides", "status") else "right")
    shown = [t for i, t in enumerate(ranked) if i < top or t.get("status") != "ok"]
    for i, t in enumerate(shown):
        objective = t.get("objective")
        test = t.get("test", {}).get("test/accuracy")
        seconds = t.get("compile_time_s", 0) + t.get("train_time_s", 0)
        table.add_row(str(i + 1) if t.get("status") == "ok" else "-", str(t["job"]),
                      t["overrides"], t.get("status", "?"),
                      f"{objective:.4f}" if objective is not None else "-",
                      f"{test:.4f}" if test is not None else "-",
                      str(t.get("epochs_run", "-")), f"{seconds:.2f}")
    return table


class SweepReport(Callback):
    """Prints the ranked trials and the sweep directory when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        trials = read_trials(sweep_dir)
        if trials:
            console = Console(width=max(120, Console().width))
            console.print(format_table(trials))
            for t in trials:
                if t.get("error"):
                    console.print(f"job {t['job']} failed: {t['error']}")
        log.info("sweep results in %s (one directory per job: result.json, metrics.jsonl)",
                 sweep_dir.resolve())
