"""Story A end to end: a researcher trains an MLP on scikit-learn's digits through a grid of two
CPU workers of equal speed and different prices, and gets the same quality as training at home;
the cheaper worker wins, and credits move from the researcher to its owner and nowhere else.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

pytestmark = pytest.mark.timeout(600)

EPOCHS = 30
BATCH = 64
LR = 1e-2
SEED = 0
#: Equal advertised speed for both workers, so price alone decides the auction.
THROUGHPUT = 1e8


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-cheap", "owner": "owner-cheap", "price": 1.0, "throughput": THROUGHPUT},
        {"worker_id": "w-dear", "owner": "owner-dear", "price": 3.0, "throughput": THROUGHPUT},
    ]


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    scaler = StandardScaler().fit(x_train)
    as_x = lambda a: torch.tensor(scaler.transform(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test)


def mlp() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def train_at_home(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """The same training in a plain PyTorch loop."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def accuracy(model: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def test_digits_on_the_grid_match_training_at_home(connect: Callable[[str], Any], operator: Any) -> None:
    researcher = connect("researcher")
    cheap_owner, dear_owner = connect("owner-cheap"), connect("owner-dear")
    operator.grant("researcher", 100)
    x_train, y_train, x_test, y_test = digits()
    model = mlp()
    at_home = copy.deepcopy(model)  # the same initial weights

    before = {g.principal: g.balance().micro for g in (researcher, cheap_owner, dear_owner)}
    assert before["researcher"] >= 100 * hg.MICRO_PER_CREDIT

    started = time.perf_counter()
    job = researcher.submit(
        model, train=(x_train, y_train), epochs=EPOCHS, batch_size=BATCH, lr=LR, loss="cross_entropy",
        optimizer="adam", seed=SEED, max_price=5.0, budget=10.0, name="digits-mlp",
        validation=(x_test, y_test),
    )  # fmt: skip
    final = job.wait(timeout=480)
    trained = job.result()
    grid_s = time.perf_counter() - started

    assert final.state is hg.JobState.COMPLETED
    assert final.worker == "w-cheap", f"the dearer worker won: {final}"
    assert final.epochs_done == EPOCHS

    started = time.perf_counter()
    train_at_home(at_home, x_train, y_train)
    home_s = time.perf_counter() - started

    grid_acc, home_acc = accuracy(trained, x_test, y_test), accuracy(at_home, x_test, y_test)
    print(f"\ntest accuracy: grid {grid_acc:.3f}, at home {home_acc:.3f}")
    print(f"wall time: grid {grid_s:.2f}s (submit → result), at home {home_s:.2f}s, ratio {grid_s / home_s:.1f}x")
    assert grid_acc >= 0.90
    assert abs(grid_acc - home_acc) <= 0.03

    after = {g.principal: g.balance().micro for g in (researcher, cheap_owner, dear_owner)}
    spent = before["researcher"] - after["researcher"]
    earned = after["owner-cheap"] - before["owner-cheap"]
    print(f"researcher paid {spent} micro-credits; owner-cheap earned {earned}; job record says {final.paid_micro}")
    assert spent > 0
    assert spent == earned == final.paid_micro
    assert after["owner-dear"] == before["owner-dear"]

    events = job.events()
    awarded = [e for e in events if isinstance(e, hg.Awarded)]
    assert [a.worker for a in awarded] == ["w-cheap"] and awarded[0].bids == 2
    progress = [e for e in events if isinstance(e, hg.Progress)]
    losses = [e.loss for e in progress]
    assert len(losses) == EPOCHS and losses[-1] < losses[0]
    # The worker's validation metrics reach the notebook, and the last one is the accuracy of
    # the model the researcher got back, measured on the same split.
    assert all(e.val_accuracy is not None and e.val_loss is not None for e in progress)
    assert progress[-1].val_accuracy == pytest.approx(grid_acc, abs=1e-6)
