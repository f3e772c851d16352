"""The PyTorch peer for scripts/bench_sweep.py: the same 32-trial sweep as a plain PyTorch loop,
one trial after another, with the same network (MLP 64-128-128-10, relu, dropout after each
hidden layer), Adam with a cosine decay per step, batches of 64 drawn by a fresh permutation each
epoch (the last partial batch dropped, as hpjax does), the validation split after every epoch
and the test split at the best epoch's parameters; the same standardised splits of digits."""

import copy
import itertools
import math
import os
import sys
import time

import torch
from torch import nn

from hpjax import data as data_lib
from hpjax.config import SklearnDataConfig

EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
BATCH = 64
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else len(os.sched_getaffinity(0)))

ds = data_lib.load(SklearnDataConfig(name="digits"))
x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train).long()
xv, yv = torch.from_numpy(ds.x_val), torch.from_numpy(ds.y_val).long()
xt, yt = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test).long()
steps = len(x) // BATCH


def trial(lr: float, dropout: float, seed: int) -> float:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout),
                          nn.Linear(128, 128), nn.ReLU(), nn.Dropout(dropout),
                          nn.Linear(128, ds.num_classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = steps * EPOCHS
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    loss_fn = nn.CrossEntropyLoss()
    best, best_state = -1.0, None
    for _ in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x))[:steps * BATCH].view(steps, BATCH)
        for idx in perm:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    with torch.no_grad():
        (model(xt).argmax(1) == yt).float().mean().item()
    return best


t0 = time.perf_counter()
accs = [trial(lr, d, s) for lr, d, s in itertools.product(
    (1e-4, 3e-4, 1e-3, 3e-3), (0, 0.1, 0.3, 0.5), (0, 1))]
print(f"torch run_s={time.perf_counter() - t0:.3f} best_val_acc={max(accs):.4f} "
      f"threads={torch.get_num_threads()}")
