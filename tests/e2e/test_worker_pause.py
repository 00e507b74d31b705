"""A worker SIGSTOPped past its heartbeat timeout, then SIGCONTed, through the real grid.

While it is stopped the registry declares it lost: its award is settled for the checkpoints
the broker verified before the stop, and the job resumes from the last of them on the other
worker. When it wakes, its late events and uploads are refused (it is paid nothing more) and it
serves again: the next job it wins completes. It ends with the books audited (``helium ledger
check``) and the resumed model within 0.03 of an uninterrupted run's accuracy.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch

from books import assert_books_balanced
from faultjobs import assert_accuracy_as_uninterrupted, digits, first_event, reference_accuracy, wide_mlp

from conftest import NatsServer

pytestmark = pytest.mark.timeout(600)

EPOCHS = 8
BATCH = 32


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-sleepy", "owner": "owner-sleepy", "price": 1.0, "throughput": 1e9},
        {"worker_id": "w-awake", "owner": "owner-awake", "price": 3.0, "throughput": 1e9},
    ]


def test_a_paused_worker_is_paid_only_its_verified_checkpoints_and_serves_again(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: NatsServer
) -> None:
    operator.grant("alice", 20)
    alice = connect("alice")
    x, y = digits()
    job = alice.submit(wide_mlp(), train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3,
                       max_price=10, budget=5, checkpoint_every=20)  # fmt: skip
    alice._run(first_event(alice, job.id, lambda e: e.kind == "checkpointed"))
    assert job.status().worker == "w-sleepy"
    sleepy = workers["w-sleepy"].popen.pid
    os.kill(sleepy, signal.SIGSTOP)
    try:
        lost = alice._run(first_event(alice, job.id, lambda e: isinstance(e, hg.StateChanged) and e.state is hg.JobState.QUEUED and e.reason))
        assert "w-sleepy" in (lost.reason or "")
        paid_at_loss = connect("owner-sleepy").balance().micro
    finally:
        os.kill(sleepy, signal.SIGCONT)
    final = job.wait(progress=False, timeout=400)
    assert final.state is hg.JobState.COMPLETED
    status = alice.job(job.id).status()
    assert status.reason_code is None
    events = job.events()
    assert [e.worker for e in events if isinstance(e, hg.Awarded)] == ["w-sleepy", "w-awake"]
    # Awake again, the paused worker earned nothing more for the run it lost.
    assert connect("owner-sleepy").balance().micro == paid_at_loss
    assert final.paid_micro == paid_at_loss + connect("owner-awake").balance().micro

    # It serves again: once the registry has it back, idle, the next job goes to it (the cheaper).
    deadline = time.monotonic() + 120
    while not any(w.worker_id == "w-sleepy" and w.alive and w.busy_with is None for w in alice.workers()):
        assert time.monotonic() < deadline, alice.workers()
        time.sleep(0.5)  # polling the registry's view: it publishes no event for a rejoin
    again = alice.submit(torch.nn.Linear(64, 10), train=(x, y), epochs=2, batch_size=BATCH, lr=1e-3,
                         max_price=10, budget=5)  # fmt: skip
    done = again.wait(progress=False, timeout=300)
    assert done.state is hg.JobState.COMPLETED and done.worker == "w-sleepy"

    reference = reference_accuracy(wide_mlp(), x, y, epochs=EPOCHS, batch_size=BATCH, lr=1e-3)
    assert_accuracy_as_uninterrupted(job.result(), reference, x, y)
    assert_books_balanced(nats_server)
