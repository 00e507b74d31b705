"""What ``grid.submit`` does with what the researcher leaves out, through a real grid:

- a model that exports ``training_loss`` trains with it unless another loss is named (before,
  the default cross_entropy over its single output gave loss 0 at every epoch, the untrained
  model came back, and the worker was paid);
- optimizer settings left out are torch.optim's defaults, ``lr`` included: the grid's result
  equals ``torch.optim.X(model.parameters())`` trained at home;
- ``before - grid.balance()`` is what the job cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.timeout(300)

N, BATCH = 256, 32


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": "w-defaults", "owner": "owner-defaults", "price": 1.0}]


@pytest.fixture(scope="module")
def researcher(connect: Callable[[str], Any], operator: Any) -> Any:
    operator.grant("researcher", 100)
    return connect("researcher")


class Regression(torch.nn.Module):
    """One output per row and its own MSE loss: cross_entropy over that output is constant 0."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(x)))

    @torch.jit.export
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.forward(x), y)


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return x, x @ w + 0.05 * torch.randn(N, 1, generator=g)


def losses_of(job: Any) -> list[float]:
    return [e.loss for e in job.events() if isinstance(e, hg.Progress)]


def test_a_model_exporting_training_loss_trains_with_it_by_default(researcher: Any) -> None:
    torch.manual_seed(0)
    model = Regression()
    x, y = regression_data()
    untrained = F.mse_loss(model(x), y).item()
    before = researcher.balance()

    job = researcher.submit(
        model, train=(x, y), epochs=8, batch_size=BATCH, lr=0.02, max_price=5.0, budget=1.0, name="own-loss"
    )  # no loss=
    final = job.wait(timeout=120, progress=False)

    assert final.state is hg.JobState.COMPLETED, final
    losses = losses_of(job)
    print(f"untrained mse {untrained:.4f}; epoch losses {[round(v, 4) for v in losses]}")
    assert len(losses) == 8 and all(v > 0 for v in losses)
    assert losses[-1] < 0.3 * losses[0]
    trained = job.result()
    with torch.no_grad():
        assert F.mse_loss(trained(x), y).item() < 0.3 * untrained
        assert trained.training_loss(x, y).item() == pytest.approx(F.mse_loss(trained(x), y).item())

    spent = before - researcher.balance()
    print(f"spent {spent!r}, paid {final.paid_micro} µcredits")
    assert isinstance(spent, hg.Balance) and spent.principal == "researcher"
    assert spent == hg.Balance("researcher", final.paid_micro) and spent > 0
    assert float(spent) == final.paid


def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def train_at_home(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """The trainer's loop with ``shuffle=False``: batches in row order, mean cross_entropy."""
    for _ in range(EPOCHS):
        for start in range(0, len(x), BATCH):
            opt.zero_grad()
            F.cross_entropy(model(x[start : start + BATCH]), y[start : start + BATCH]).backward()
            opt.step()


EPOCHS = 3
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_optimizer_settings_left_out_are_torch_optims_defaults(researcher: Any, kind: str) -> None:
    x, _ = regression_data()
    y = torch.randint(0, 4, (N,), generator=torch.Generator().manual_seed(4))
    model = classifier()
    at_home = copy.deepcopy(model)

    job = researcher.submit(
        model, train=(x, y), epochs=EPOCHS, batch_size=BATCH, optimizer=kind, shuffle=False,
        max_price=5.0, budget=1.0, name=f"defaults-{kind}",
    )  # no lr, momentum, weight_decay, betas, eps  # fmt: skip
    assert job.wait(timeout=120, progress=False).state is hg.JobState.COMPLETED
    trained = dict(job.result().named_parameters())

    train_at_home(at_home, OPTIMIZERS[kind](at_home.parameters()), x, y)
    moved = 0.0
    for name, value in at_home.named_parameters():
        torch.testing.assert_close(trained[name], value.detach(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
        moved = max(moved, (value.detach() - dict(model.named_parameters())[name].detach()).abs().max().item())
    assert moved > 1e-4, "training at home did not move the parameters; the comparison proves nothing"
