"""Benchmark: training through a running grid against the same training in a plain PyTorch loop.

For each model, side by side in one run (interleaved, medians over ``--runs``):
- submit → trained model in hand through the grid, against the plain loop a researcher would
  write at home (same data, hyper-parameters and thread count), as a ratio;
- the trainer's samples/s inside the grid (from its progress events) against the plain loop's;
- submit → training start (the job's own event times).

The plain loop gets as many threads as the grid's trainer (``HELIUM_WORKER_THREADS``, which
``make up`` writes: half the cores, since its two workers share the machine; default torch's
own count). Run against a grid started with ``make up`` (``make bench`` does both).

Example:
    HELIUM_NATS_URL=nats://127.0.0.1:4222 .venv/bin/python tests/bench/grid_vs_plain.py --runs 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path
from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import nn

from helium_grid import Grid
from helium_grid.records import JobState, Progress, StateChanged


@dataclass(frozen=True)
class Case:
    name: str
    hidden: tuple[int, ...]
    epochs: int
    batch: int
    lr: float

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        width = 64
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10))


CASES = {
    "small": Case("small MLP 64-64-10", (64,), epochs=30, batch=64, lr=1e-2),
    "wide": Case("wide MLP 64-1024-1024-10", (1024, 1024), epochs=60, batch=32, lr=1e-3),
}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32)
    return (xt - xt.mean(0)) / (xt.std(0) + 1e-6), torch.tensor(y)


def plain(case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The loop a researcher would write at home; returns wall seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=case.lr)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(case.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(case.batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start


@dataclass
class GridRun:
    wall: float
    start_latency: float
    samples_per_sec: float


def through_grid(grid: Grid, case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> GridRun:
    start = time.perf_counter()
    job = grid.submit(model, train=(x, y), epochs=case.epochs, batch_size=case.batch, lr=case.lr,
                      max_price=10, budget=5, name=f"bench {case.name}")
    job.wait(progress=False)
    job.result()
    wall = time.perf_counter() - start
    events = job.events()
    states = {e.state: e.at_ms for e in events if isinstance(e, StateChanged)}
    # The first epoch includes the trainer's warm-up; the rest is steady state.
    rates = [e.samples_per_sec for e in events if isinstance(e, Progress)][1:]
    return GridRun(wall, (states[JobState.RUNNING] - states[JobState.QUEUED]) / 1000, statistics.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default="small,wide")
    args = parser.parse_args()
    url = os.environ.get("HELIUM_NATS_URL", "nats://127.0.0.1:4222")
    threads = int(os.environ.get("HELIUM_WORKER_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    x, y = data()
    cases = [CASES[c] for c in args.cases.split(",")]
    creds = Path(os.environ.get("HELIUM_CREDS_DIR", ".helium/grid/creds"))
    with Grid(url, creds=creds / "operator.creds") as operator:
        operator.grant("researcher", 10 * args.runs * len(cases))
    grid = Grid(url, creds=creds / "researcher.creds")
    print(f"threads: {threads} for the plain loop and for the grid's trainer")
    starts: list[float] = []
    for case in cases:
        plains, grids = [], []
        for _ in range(args.runs):
            model = case.model()
            plains.append(plain(case, copy.deepcopy(model), x, y))
            grids.append(through_grid(grid, case, model, x, y))
        p = statistics.median(plains)
        g = statistics.median(r.wall for r in grids)
        plain_sps = len(x) * case.epochs / p
        grid_sps = statistics.median(r.samples_per_sec for r in grids)
        starts += [r.start_latency for r in grids]
        print(f"{case.name}, {case.epochs} epochs: plain {p:.2f} s, grid end to end {g:.2f} s, "
              f"ratio grid/plain {g / p:.2f}")
        print(f"  trainer samples/s: grid {grid_sps:.0f} vs plain {plain_sps:.0f}, ratio {grid_sps / plain_sps:.2f}")
    print(f"submit -> training start: median {statistics.median(starts):.3f} s over {len(starts)} jobs")


if __name__ == "__main__":
    main()
