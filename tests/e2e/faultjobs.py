"""What the fault tests (a worker killed or paused, the broker restarted) train and await: the
digits data, a model slow enough on one thread to be interrupted mid-run, and the first event
of a job that matches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helium_grid as hg
import torch
from sklearn.datasets import load_digits


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32)
    return (xt - xt.mean(0)) / (xt.std(0) + 1e-6), torch.tensor(y)


def wide_mlp() -> torch.nn.Module:
    """Slow enough on one thread (about a second an epoch) to be interrupted mid-run."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)
    )


async def first_event(grid: Any, job_id: str, match: Callable[[hg.JobEvent], bool]) -> hg.JobEvent:
    """The job's first event (from its start, then live) for which ``match`` is true."""
    async for event in grid._async._event_feed(job_id, live=True, timeout=300):
        if match(event):
            return event
    raise AssertionError(f"job {job_id} ended before the awaited event")
