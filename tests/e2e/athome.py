"""The grid's training, done at home: the batch order ported from the trainer (splitmix64 +
Fisher–Yates, as in ``worker-actors/src/trainer/data.rs``), the loss menu, torch.optim built
from the wire's ``OptimizerSpec``, and the loop the trainer runs. ``test_trainer_matches_torch``
holds the grid's trainer to it step for step; the fault tests (through ``faultjobs``) compare
the accuracy of a job that survived a fault with what this loop reaches uninterrupted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MASK = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Row order of ``epoch`` (1-based) for a job seeded with ``seed``."""
    order = list(range(n))
    if not shuffle:
        return order
    state = seed ^ mix64(((epoch + 1) * GOLDEN_GAMMA) & MASK)

    def below(bound: int) -> int:
        nonlocal state
        threshold = ((1 << 64) - bound) % bound
        while True:
            state = (state + GOLDEN_GAMMA) & MASK
            r = mix64(state)
            if r >= threshold:
                return r % bound

    for i in range(n - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


LOSSES = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
    "nll": F.nll_loss,
}


def torch_optimizer(params: Any, spec: dict) -> torch.optim.Optimizer:
    """torch.optim's optimizer for a wire ``OptimizerSpec`` (``kind``, ``lr``, ``momentum``,
    ``weight_decay``, ``nesterov``, ``beta1``, ``beta2``, ``eps``; missing ones default)."""
    kind, lr = spec["kind"], spec["lr"]
    wd = spec.get("weight_decay", 0.0)
    betas = (spec.get("beta1", 0.9), spec.get("beta2", 0.999))
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.get("momentum", 0.0), weight_decay=wd,
                               nesterov=spec.get("nesterov", False), foreach=False)  # fmt: skip
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd, eps=spec.get("eps", 1e-8), foreach=False)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd, eps=spec.get("eps", 1e-8), foreach=False)


def train_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict) -> list[float]:
    """Trains ``model`` in place as the grid's trainer does a job with training ``spec``
    (``epochs``, ``batch_size``, ``loss``, ``optimizer``, ``seed``, ``shuffle``); the mean loss
    of each epoch."""
    model.train()
    opt = torch_optimizer(model.parameters(), spec["optimizer"])
    n, bs = x.shape[0], spec["batch_size"]
    losses = []
    for epoch in range(1, spec["epochs"] + 1):
        order = torch.tensor(epoch_order(n, spec["seed"], epoch, spec["shuffle"]))
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            if spec["loss"] == "module":
                loss = model.training_loss(xb, yb)
            else:
                loss = LOSSES[spec["loss"]](model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    return losses
