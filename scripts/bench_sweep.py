"""Benchmark of the population engine on a 32-trial digits sweep (MLP 64-128-128-10, Adam, batch 64,
20 epochs: learning rate x dropout x seed), all measured in this run:

- the machine's float32 matmul rate, for 2048x2048 and for the model's layer shape (64x128 @ 128x128
  batched over 32 members), on one JAX device (which XLA runs on one core) and split over every
  device: the ceilings;
- a bare `jit(vmap(train))` script of the same work as a process (scripts/_bare_sweep.py): the
  floor;
- the same sweep as a plain PyTorch loop of the same network and batches (scripts/_torch_sweep.py,
  one trial after another, as a process): the peer;
- `hpjax -m` with the vmap launcher under Hydra's basic sweeper, as the user types it, as
  processes, with a cold compilation cache and a warm one (`--basic-launcher` adds Hydra's basic
  launcher, one job after another);
- with `--sizes 8,32,128,512`: how the engine's time grows with the population size (members of
  the sweep's learning rates x dropout rates, seeds 0, 1, ..., in process).

Each process runs `--repeats` times, alternating (a shared machine's neighbours come and go); the
table gives the median and the ratios of medians, and goes into docs/benchmarks.md (its own
section, with the date, the commit and the load average).

    python scripts/bench_sweep.py [--epochs 20] [--repeats 3] [--sizes 8,32,128,512]

On a GPU, `--sizes 1,256` adds how population 256's run time compares with population 1's.
"""

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpjax.engine.compile import use_cpu_cores

use_cpu_cores()  # as the `hpjax` command does: one JAX device per core (HPJAX_CPU_DEVICES=1: one)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

HERE = Path(__file__).resolve().parent
SWEEP = ["optimizer.lr=1e-4,3e-4,1e-3,3e-3", "model.dropout=0,0.1,0.3,0.5", "train.seed=0,1",
         "activation=relu", "train.early_stopping.patience=null"]
LAYERS = ((64, 128), (128, 128), (128, 10))  # digits' 64 features, 2 hidden layers, 10 classes


def matmul_gflops(shape_a, shape_b, repeats=20, sharded=False) -> float:
    """float32 matmul rate, `repeats` products chained inside one program (no dispatch per
    product), on one device or with the batch split over every device."""
    a, b = jnp.ones(shape_a, jnp.float32), jnp.full(shape_b, 1e-3, jnp.float32)
    if sharded:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        split = NamedSharding(Mesh(jax.devices(), ("m",)), PartitionSpec("m"))
        a, b = jax.device_put((a, b), split)
    f = jax.jit(lambda a, b: jax.lax.fori_loop(0, repeats, lambda i, x: jnp.matmul(x, b), a))
    f(a, b).block_until_ready()
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    flops = 2 * a.size // a.shape[-1] * a.shape[-1] * b.shape[-1]
    return flops * repeats / (time.perf_counter() - t0) / 1e9


def training_gflop(members: int, epochs: int, n_train: int = 1257, batch: int = 64) -> float:
    """The sweep's training matmul FLOPs: per step and layer 2 x batch x weights forward, as many
    for the weights' gradient and for the input's gradient, except the first layer's (the
    data's gradient is not computed)."""
    steps = n_train // batch * epochs
    weights = [i * o for i, o in LAYERS]
    return 2 * batch * (3 * sum(weights) - weights[0]) * steps * members / 1e9


def evaluation_gflop(members: int, epochs: int, n_val: int = 270, n_test: int = 270) -> float:
    """The forward matmul FLOPs of the validation after every epoch and the final test."""
    return 2 * sum(i * o for i, o in LAYERS) * (n_val * epochs + n_test) * members / 1e9


def timed(cmd, env) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout + out.stderr


def cpu_seconds() -> float:
    """User + system CPU of the finished child processes so far: on a machine others share,
    what a process cost, whatever its neighbours did to its wall time."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def peers(args: argparse.Namespace, tmp: str, hpjax: str, layer: float) -> list:
    """The sweep end to end as processes, alternating, `args.repeats` times: (name, seconds)."""
    import statistics

    # the peers write no report: hpjax is timed without report.html, written after training
    env = {**os.environ, "HPJAX_REPORT_HTML": "off"}
    cold = {**env, "HPJAX_COMPILATION_CACHE": "off"}
    warm = {**env, "HPJAX_COMPILATION_CACHE": os.path.join(tmp, "cache")}
    threads = args.torch_threads or len(os.sched_getaffinity(0))
    runs = {"bare": [sys.executable, str(HERE / "_bare_sweep.py"), str(args.epochs)],
            "torch": [sys.executable, str(HERE / "_torch_sweep.py"), str(args.epochs),
                      str(threads)]}
    sweep = [hpjax, "-m", *SWEEP, f"train.epochs={args.epochs}"]
    runs["hpjax cold"] = sweep
    runs["hpjax warm"] = sweep
    if args.basic_launcher:
        runs["hpjax basic launcher"] = [*sweep, "hydra/launcher=basic"]
    times: dict = {name: [] for name in runs}
    cpu: dict = {name: [] for name in runs}
    timed([*sweep, f"hydra.sweep.dir={tmp}/fill"], warm)  # fills the warm cache
    for r in range(args.repeats):
        for name, cmd in runs.items():
            if name.startswith("hpjax"):
                cmd = [*cmd, f"hydra.sweep.dir={tmp}/{r}-{len(times[name])}-{name[6:10]}"]
            c0 = cpu_seconds()
            seconds, out = timed(cmd, warm if name == "hpjax warm" else cold)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds() - c0)
            if name == "bare" and r == 0:
                compile_s, run_s = (float(v) for v in re.findall(r"_s=([\d.]+)", out)[:2])
                gflop = training_gflop(32, args.epochs) + evaluation_gflop(
                    32, args.epochs, n_test=0)
                print(f"bare jit(vmap(train)) script: compile {compile_s:.2f} s, run "
                      f"{run_s:.2f} s: {gflop / run_s:.1f} GFLOP/s, {gflop / run_s / layer:.0%} "
                      "of one device's layer-shape ceiling")
            print(f"  {name:22s} run {r + 1}: {seconds:6.2f} s wall, {cpu[name][-1]:6.2f} s CPU",
                  flush=True)
    median = {name: statistics.median(v) for name, v in times.items()}
    mcpu = {name: statistics.median(v) for name, v in cpu.items()}
    rows = []
    for name, v in times.items():
        rows.append((name, median[name], min(v), max(v), median[name] / median["bare"],
                     median["torch"] / median[name], mcpu[name], mcpu[name] / mcpu["bare"],
                     mcpu["torch"] / mcpu[name]))
    head = ("| process | wall s (median) | min | max | wall vs bare script | PyTorch's wall over "
            "it | CPU s (median) | CPU vs bare script | PyTorch's CPU over it |\n"
            "|---|---|---|---|---|---|---|---|---|")
    table = "\n".join([head] + [
        f"| {n} | {m:.2f} | {lo:.2f} | {hi:.2f} | {b:.2f}x | {t:.2f}x | {c:.2f} | {cb:.2f}x | "
        f"{ct:.2f}x |" for n, m, lo, hi, b, t, c, cb, ct in rows])
    print(table)
    return [table, threads, args.repeats]


def write_doc(result: list, args: argparse.Namespace) -> None:
    """The table into docs/benchmarks.md, section bench_sweep (`_benchdoc`)."""
    if args.no_docs:
        return
    from _benchdoc import write_section

    table, threads, repeats = result
    write_section("bench_sweep", "End to end: the 32-trial grid against a bare script and "
                  "PyTorch (`scripts/bench_sweep.py`)",
                  f"python scripts/bench_sweep.py --epochs {args.epochs} --repeats {repeats}"
                  + (f" --torch-threads {args.torch_threads}" if args.torch_threads else ""), f"""
The sweep: `hpjax -m {' '.join(SWEEP)} train.epochs={args.epochs}` (digits, MLP 64-128-128-10,
Adam, batch 64; Hydra's basic sweeper, the vmap launcher), a process each time, {repeats} runs of
each process alternating (the median, min and max). Cold: `HPJAX_COMPILATION_CACHE=off`; warm: a
cache the same sweep filled. The bare script (scripts/_bare_sweep.py) is one `jit(vmap(train))`
of the same work without Hydra or files; PyTorch (scripts/_torch_sweep.py) trains the same
network and batches one trial after another on {threads} thread(s). CPU: user + system seconds
of the process and its threads (on a shared machine, what it cost whatever its neighbours did).

{table}
""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sizes", default="", help="population sizes, e.g. 8,32,128,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--basic-launcher", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=0, help="default: every core")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    hpjax = str(Path(sys.executable).parent / "hpjax")
    gflop = training_gflop(32, args.epochs) + evaluation_gflop(32, args.epochs)
    print(f"device: {jax.devices()[0]}   sweep: 32 trials x {args.epochs} epochs, "
          f"{training_gflop(32, args.epochs):.1f} GFLOP of training matmuls + "
          f"{evaluation_gflop(32, args.epochs):.1f} GFLOP of evaluation = {gflop:.1f} GFLOP")

    big = matmul_gflops((2048, 2048), (2048, 2048), repeats=10)
    layer = matmul_gflops((32, 64, 128), (32, 128, 128), repeats=2000)
    print(f"ceiling  float32 matmul 2048x2048 {big:7.1f} GFLOP/s, "
          f"layer shape 32x(64x128 @ 128x128) {layer:7.1f} GFLOP/s on one device (XLA: one core)")
    every = layer  # the layer shape over every device, one per core
    if len(jax.devices()) > 1:
        every = matmul_gflops((32, 64, 128), (32, 128, 128), repeats=2000, sharded=True)
        print(f"         layer shape split over {len(jax.devices())} devices (one per core) "
              f"{every:7.1f} GFLOP/s")

    with tempfile.TemporaryDirectory() as tmp:
        rows = peers(args, tmp, hpjax, layer)
    write_doc(rows, args)
    if not args.sizes:
        return
    from hydra import compose, initialize_config_dir

    from hpjax.cli import CONF_DIR, register
    from hpjax.config import to_config
    from hpjax.engine.compile import CompileStats
    from hpjax.engine.loop import train_population

    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        base = to_config(compose("config", overrides=[
            "activation=relu", f"train.epochs={args.epochs}",
            "train.early_stopping.patience=null"]))

    def grid(size: int) -> list:
        """The sweep's 16 learning rates x dropout rates, once per seed 0, 1, ...: 32 members
        are the sweep itself, 512 have 32 seeds."""
        cfgs = []
        for i in range(size):
            lr, dropout = (1e-4, 3e-4, 1e-3, 3e-3)[i % 4], (0, 0.1, 0.3, 0.5)[i // 4 % 4]
            cfgs.append(dataclasses.replace(
                base, optimizer=dataclasses.replace(base.optimizer, lr=lr),
                model=dataclasses.replace(base.model, dropout=dropout),
                train=dataclasses.replace(base.train, seed=i // 16)))
        return cfgs

    # first: the first call (tracing, compiling, allocating); run: the faster of two more calls
    # of the same program (a shared machine's neighbours come and go), the whole host loop
    # included (per-epoch validation, early-stopping bookkeeping, the final test)
    print(f"population size   first s   compile s   run s   run s per member   GFLOP/s   "
          f"of one device's ceiling   of {len(jax.devices())} devices'   run s / population 1's")
    single = None
    for size in (int(s) for s in args.sizes.split(",")):
        cfgs = grid(size)
        c0, t0 = CompileStats.seconds, time.perf_counter()
        train_population(cfgs, launcher="vmap")
        first, compile_s = time.perf_counter() - t0, CompileStats.seconds - c0
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            train_population(cfgs, launcher="vmap")
            runs.append(time.perf_counter() - t0)
        run = min(runs)
        rate = (training_gflop(size, args.epochs) + evaluation_gflop(size, args.epochs)) / run
        single = run if size == 1 else single
        print(f"{size:15d} {first:9.2f} {compile_s:11.2f} {run:7.2f} {run / size:18.4f} "
              f"{rate:9.1f} {rate / layer:25.0%} {rate / every:14.0%}"
              + (f" {run / single:24.2f}" if single else ""))


if __name__ == "__main__":
    main()
