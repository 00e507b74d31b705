"""Checkpoints follow the job's policy through the real grid, and pay follows them.

A job checkpoints every N optimizer steps; its worker is SIGKILLed after a few verified
checkpoints. The owner is paid exactly the fraction of the job's steps up to the last verified
checkpoint, the job resumes from that (mid-epoch) step on the other worker, and the model that
comes back equals, bit for bit, the one an uninterrupted run of the same job trains; the books
are audited at the end (``helium ledger check``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch

from books import assert_books_balanced
from faultjobs import digits, first_event, wide_mlp

from conftest import NatsServer

pytestmark = pytest.mark.timeout(600)

EPOCHS = 12
BATCH = 32
#: Not a divisor of the 57 steps of an epoch: most checkpoints fall mid-epoch.
EVERY = 20


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-first", "owner": "owner-first", "price": 1.0, "throughput": 1e9},
        {"worker_id": "w-second", "owner": "owner-second", "price": 3.0, "throughput": 1e9},
    ]


def submit(grid: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    return grid.submit(wide_mlp(), train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3,
                       max_price=10, budget=5, checkpoint_every=EVERY)


def test_pay_and_resume_follow_the_last_verified_checkpoint(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: NatsServer
) -> None:
    operator.grant("alice", 20)
    alice = connect("alice")
    x, y = digits()
    steps_per_epoch = -(-len(x) // BATCH)
    total_steps = EPOCHS * steps_per_epoch

    job = submit(alice, x, y)
    third = alice._run(first_event(alice, job.id, lambda e: e.kind == "checkpointed" and e.raw["step"] >= 3 * EVERY))
    assert third.raw["step"] % EVERY == 0
    first = job.status()
    assert first.worker == "w-first"
    workers["w-first"].popen.kill()
    job.wait(progress=False, timeout=300)

    events = job.events()
    lost = next(i for i, e in enumerate(events)
                if isinstance(e, hg.StateChanged) and e.state is hg.JobState.QUEUED and "lost" in (e.reason or ""))
    before = [e.raw["step"] for e in events[:lost] if e.kind == "checkpointed"]
    after = [e.raw["step"] for e in events[lost:] if e.kind == "checkpointed"]
    # Taken every N steps (the uploader may drop one that a newer one overtook before it was
    # sent, so the verified ones are a rising subset of the multiples of N).
    steps = before + after
    assert all(s % EVERY == 0 for s in steps) and steps == sorted(set(steps)), steps
    assert before and after and after[0] > before[-1]
    resumed_at = before[-1]
    assert f"resuming from epoch {resumed_at // steps_per_epoch}" in events[lost].reason

    awards = [e for e in events if isinstance(e, hg.Awarded)]
    assert [a.worker for a in awards] == ["w-first", "w-second"]
    # Paid the job's steps up to the last verified checkpoint, to the micro-credit.
    expected_pay = awards[0].price_micro * resumed_at // total_steps
    assert connect("owner-first").balance().micro == expected_pay
    final = job.status()
    assert final.state is hg.JobState.COMPLETED
    assert final.paid_micro == expected_pay + connect("owner-second").balance().micro

    # The same job uninterrupted, on the same (remaining) worker: the same model, bit for bit.
    again = submit(alice, x, y)
    again.wait(progress=False, timeout=300)
    resumed, whole = job.result(), again.result()
    for (name, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert_books_balanced(nats_server)
