"""Benchmark: a sweep of N jobs on a running grid against one job of the same shape.

Submits one job and times submit → result (median over ``--runs``); then a ``grid.sweep`` of
``--jobs`` points (default: as many as the grid has idle workers) of the same job and times
submit → every result, through ``helium_grid.wait_all``. Prints both, their ratio (1.0 is a
perfect burst: N jobs in the time of one), how many distinct workers trained the sweep, and
the auctions and holds it took (from the jobs' events: one each per job when the auction's
rounds spread the jobs over the workers).

Example:
    HELIUM_NATS_URL=nats://127.0.0.1:4222 .venv/bin/python tests/bench/sweep.py --jobs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import helium_grid as hg


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32)
    return (xt - xt.mean(0)) / (xt.std(0) + 1e-6), torch.tensor(y)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=0, help="sweep points (default: the idle workers)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    url = os.environ.get("HELIUM_NATS_URL", "nats://127.0.0.1:4222")
    creds = Path(os.environ.get("HELIUM_CREDS_DIR", ".helium/grid/creds"))
    with hg.Grid(url, creds=creds / "operator.creds") as operator:
        operator.grant("researcher", 100)
    grid = hg.Grid(url, creds=creds / "researcher.creds")
    x, y = data()
    n = args.jobs or sum(1 for w in grid.workers() if w.alive and w.busy_with is None)
    common = dict(train=(x, y), epochs=args.epochs, batch_size=32, max_price=10, budget=2)

    singles = []
    for _ in range(args.runs):
        start = time.perf_counter()
        job = grid.submit(model(), lr=1e-3, **common)
        job.wait(progress=False)
        job.result()
        singles.append(time.perf_counter() - start)
    one = statistics.median(singles)

    lrs = [1e-3 * (1 + i) for i in range(n)]
    start = time.perf_counter()
    jobs = grid.sweep(model(), lr=lrs, **common)
    df = hg.wait_all(jobs, progress=False, results=True)
    burst = time.perf_counter() - start
    events = [j.events() for j in jobs]
    auctions = sum(sum(isinstance(e, hg.Awarded) for e in ev) for ev in events)
    grid.close()

    print(f"{'':28s}{'seconds':>10s}")
    print(f"{'one job':28s}{one:10.2f}")
    print(f"{f'sweep of {n}':28s}{burst:10.2f}")
    print(f"ratio sweep/one job {burst / one:.2f} (sweep of {n} on {df.worker.nunique()} workers; "
          f"{auctions} awards for {n} jobs; states {sorted(set(df.state))})")  # fmt: skip


if __name__ == "__main__":
    main()
