"""Benchmark of the SLURM launcher on this machine's one-node cluster (`scripts/local_cluster.sh`):
the same 64-trial digits sweep (learning rate x dropout x seed, MLP 64-128-128-10, Adam, batch 64,
20 epochs) as one SLURM job per trial and as vectorized chunks (one SLURM job per population).

Each sweep is a whole `hpjax -m` process (driver, submission, jobs, results) with a fresh, empty
compilation cache shared by its jobs, as a user's cache folder would be.

    python scripts/bench_cluster.py [--epochs 20] [--max-population 64]
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["optimizer.lr=1e-4,3e-4,1e-3,3e-3", "model.dropout=0,0.1,0.3,0.5", "train.seed=0,1,2,3",
         "activation=relu", "train.early_stopping.patience=null"]


def sweep(name: str, launcher: list, epochs: int, workdir: Path) -> tuple[float, dict, int]:
    """(process seconds, {trial: objective}, SLURM jobs) of one sweep."""
    cache = workdir / f"cache-{name}"
    env = {**os.environ, "HPJAX_COMPILATION_CACHE": str(cache)}
    cmd = [str(Path(sys.executable).parent / "hpjax"), "-m", *launcher, *SWEEP,
           f"train.epochs={epochs}", f"hydra.sweep.dir={name}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    seconds = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    with open(workdir / name / "summary.csv") as f:
        objectives = {int(r["trial"]): float(r["objective"]) for r in csv.DictReader(f)}
    jobs = len(list((workdir / name / ".submitit").rglob("*_result.pkl")))
    return seconds, objectives, jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-population", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("no SLURM here: start the local cluster with scripts/local_cluster.sh")
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout
    print(f"one-node SLURM cluster, {cpus.strip()} CPUs; 64 trials x {args.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        per_trial = sweep("per_trial", ["hydra/launcher=hpjax_slurm",
                                        "hydra.launcher.vectorize=false"], args.epochs, workdir)
        chunks = sweep("chunks", ["hydra/launcher=hpjax_slurm",
                                  f"hydra.launcher.max_population={args.max_population}"],
                       args.epochs, workdir)
    print(f"{'mode':<34}{'SLURM jobs':>11}{'wall s':>9}{'trials/s':>10}")
    for name, (seconds, objectives, jobs) in (("one SLURM job per trial", per_trial),
                                             ("vectorized chunks (populations)", chunks)):
        print(f"{name:<34}{jobs:>11}{seconds:>9.1f}{len(objectives) / seconds:>10.2f}")
    print(f"vectorized chunks are {per_trial[0] / chunks[0]:.1f}x faster than one job per trial")
    diff = max(abs(per_trial[1][k] - chunks[1][k]) for k in per_trial[1])
    print(f"largest difference of a trial's objective between the two: {diff:.2e}")


if __name__ == "__main__":
    main()
