"""Benchmark: the digits MLP trained through a running grid vs the same training in plain PyTorch.

Prints wall times, their ratio, and the grid's submit → training-start latency (from the job's
own event times). Run against a grid started with ``make up`` (``make bench`` does both).

Example:
    HELIUM_NATS_URL=nats://127.0.0.1:4222 .venv/bin/python tests/bench/grid_vs_plain.py --runs 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from helium_grid import Grid
from helium_grid.records import JobState, StateChanged

EPOCHS, BATCH, LR = 30, 64, 1e-2


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32)
    return (xt - xt.mean(0)) / (xt.std(0) + 1e-6), torch.tensor(y)


def plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The same loop a researcher would write at home; returns wall seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return time.perf_counter() - start


def through_grid(grid: Grid, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Submit → result in hand; returns (wall seconds, submit→running seconds)."""
    start = time.perf_counter()
    job = grid.submit(model, train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=LR, max_price=10, budget=5)
    job.wait(progress=False)
    job.result()
    wall = time.perf_counter() - start
    states = {e.state: e.at_ms for e in job.events() if isinstance(e, StateChanged)}
    return wall, (states[JobState.RUNNING] - states[JobState.QUEUED]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("HELIUM_NATS_URL", "nats://127.0.0.1:4222")
    torch.set_num_threads(1)
    x, y = data()
    Grid(url, principal="operator").grant("bench", 10 * args.runs)
    grid = Grid(url, principal="bench")
    plains, grids, starts = [], [], []
    for _ in range(args.runs):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        plains.append(plain(copy.deepcopy(model), x, y))
        wall, start = through_grid(grid, model, x, y)
        grids.append(wall)
        starts.append(start)
    p, g = statistics.median(plains), statistics.median(grids)
    print(f"plain PyTorch (1 thread): {p:.2f} s   grid end to end: {g:.2f} s   ratio grid/plain: {g / p:.2f}")
    print(f"submit -> training start: median {statistics.median(starts):.2f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
