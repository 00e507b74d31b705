"""What the fault tests (a worker killed or paused, the broker restarted) train and await: the
digits data, a model slow enough on one thread to be interrupted mid-run, the first event of a
job that matches, and what the job would reach uninterrupted (``reference_accuracy``, the
grid's own training done at home by ``athome.train_loop``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helium_grid as hg
import torch
from helium_grid._submission import optimizer_spec
from sklearn.datasets import load_digits

from athome import train_loop

#: How far a job that survived a fault may land from an uninterrupted run's accuracy.
ACCURACY_TOLERANCE = 0.03


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


@torch.no_grad()
def accuracy(model: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of rows of ``x`` whose arg-max class is ``y``'s."""
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def reference_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float | None = None,
    optimizer: str = "adam",
    loss: str = "cross_entropy",
    seed: int = 0,
    shuffle: bool = True,
) -> float:
    """The accuracy on ``(x, y)`` that an uninterrupted run of the job
    ``grid.submit(model, train=(x, y), epochs=…, batch_size=…, lr=…)`` reaches: ``model``
    (untrained, as submitted) trained in place here, in the trainer's batch order, with the
    optimizer spec the client would send."""
    spec = {"epochs": epochs, "batch_size": batch_size, "loss": loss, "seed": seed, "shuffle": shuffle,
            "optimizer": optimizer_spec(optimizer, lr=lr)}  # fmt: skip
    train_loop(model, x, y, spec)
    return accuracy(model, x, y)


def assert_accuracy_as_uninterrupted(trained: Any, reference: float, x: torch.Tensor, y: torch.Tensor) -> None:
    """``trained`` (a job's result) within ``ACCURACY_TOLERANCE`` of ``reference``."""
    got = accuracy(trained, x, y)
    assert abs(got - reference) <= ACCURACY_TOLERANCE, f"accuracy {got:.4f}, uninterrupted {reference:.4f}"
