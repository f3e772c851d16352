"""Benchmark of streamed data against data on the device (docs/data.md).

Trains the default MLP (2x128, Adam, batch 64) on MNIST-1D-sized records (40 features, 10
classes, 4,000 training samples: `data=mnist1d data.n_samples=5883`) with the splits on the device
and the same splits streamed through Grain (`data.stream=true`: blocks of `data.stream_block`
batches read ahead by threads, or by worker processes), for populations of 1 and 16 members.
Prints, per epoch (training and the validation pass, compile excluded, the median of the epochs
after the first): the time, training samples per second, how long the host waited for the input
pipeline (an upper bound of the device's wait: the device still has the block before in hand), and
the ratio to the on-device epoch of the same population, measured in this process. On a GPU the
same script is the overlap check: a wait near zero means the transfers hid behind the steps.

    python scripts/bench_data.py [--epochs 6] [--doc]   # --doc: writes docs/benchmarks.md
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = ["data=mnist1d", "data.n_samples=5883", "train.early_stopping.patience=null"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hpjax.cli import CONF_DIR, register
    from hpjax.config import to_config

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return to_config(hydra_compose("config", overrides=overrides))


def measure(paths: list[tuple[str, list[str]]], members: int, epochs: int) -> list[dict]:
    """The median epoch (train + validation) after the first of a population of `members` for
    each path; the paths take turns epoch by epoch, so that they share the machine's load."""
    import dataclasses

    from hpjax.engine.loop import _Run

    runs = []
    for _, overrides in paths:
        cfg = compose([*DATA, f"train.epochs={epochs}", *overrides])
        cfgs = [dataclasses.replace(cfg, optimizer=dataclasses.replace(
            cfg.optimizer, lr=cfg.optimizer.lr * (1 + k / members))) for k in range(members)]
        runs.append(_Run(cfgs, [0] * members, "bench", None))
    times, waits = [[] for _ in runs], [[] for _ in runs]
    for epoch in range(1, epochs + 1):
        for run, t, w in zip(runs, times, waits, strict=True):
            wait0 = getattr(run.feed, "wait_s", 0.0)
            t0 = time.perf_counter()
            run.epoch(epoch, None)
            jax.block_until_ready(run.states)
            t.append(time.perf_counter() - t0)
            w.append(getattr(run.feed, "wait_s", 0.0) - wait0)
    out = []
    for run, t, w in zip(runs, times, waits, strict=True):
        run.feed.close()
        spec = run.pop.spec
        epoch_s = statistics.median(t[1:])
        out.append({"epoch_s": epoch_s, "wait_s": statistics.median(w[1:]),
                    "samples_s": spec.steps_per_epoch * spec.batch_size / epoch_s,
                    "n_train": spec.n_train})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--doc", action="store_true", help="write docs/benchmarks.md's section")
    args = parser.parse_args()
    paths = [("on the device", ["data.stream=false"]),
             ("streamed, 2 threads", ["data.stream=true"]),
             ("streamed, 1 worker process", ["data.stream=true", "data.stream_workers=1"])]
    rows = []
    for members in args.members:
        results = measure(paths, members, args.epochs)
        base = results[0]["epoch_s"]
        for (name, _), m in zip(paths, results, strict=True):
            rows.append((members, name, m, m["epoch_s"] / base))
            print(f"{members:3d} members  {name:28s} epoch {m['epoch_s'] * 1e3:8.1f} ms  "
                  f"{m['samples_s']:9,.0f} samples/s  host wait {m['wait_s'] * 1e3:7.1f} ms  "
                  f"{m['epoch_s'] / base:5.2f}x on-device", flush=True)
    n_train = rows[0][2]["n_train"]
    table = ["| members | data | epoch | train samples/s | host waits for data | vs on device |",
             "|---|---|---|---|---|---|"]
    table += [f"| {p} | {name} | {m['epoch_s'] * 1e3:.1f} ms | {m['samples_s']:,.0f} | "
              f"{m['wait_s'] * 1e3:.1f} ms | {ratio:.2f}x |" for p, name, m, ratio in rows]
    if args.doc:
        from _benchdoc import write_section

        write_section("bench_data", "Streamed data against data on the device "
                      "(`scripts/bench_data.py`)", "python scripts/bench_data.py --doc", f"""
The default MLP (2x128, Adam, batch 64) on MNIST-1D ({n_train:,} training samples of 40
features, 10 classes), the splits on the device or streamed through Grain (`data.stream=true`,
blocks of 8 batches), in populations of 1 and 16 members (each member its own learning rate).
An epoch is the training pass and the validation pass, compile excluded: the median of epochs 2
to {args.epochs}, the three paths taking turns epoch by epoch. Samples per second are the
population's (each sample serves every member). "Host waits for data" is the time the host spent
blocked on the input pipeline in an epoch, an upper bound of the device's wait (it still holds the
block before).

{chr(10).join(table)}
""")


if __name__ == "__main__":
    main()
