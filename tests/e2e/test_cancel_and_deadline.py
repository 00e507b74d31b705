"""Ending a job early, through the real grid: a researcher's cancel and a passed deadline stop
the running trainer at once and settle exactly its verified checkpoints; a job no worker can
take expires at its deadline with its whole budget back.

Each test measures, from this process, how long the worker took to stop its trainer after the
cancel was sent (or the deadline passed) — the worker logs "award cancelled; trainer stopped"
once the trainer's process group is dead — and asserts the issue's bound of 5 s. The pay is
checked to the micro-credit: price × (last verified checkpoint step / the award's steps), the
rest refunded, the owner credited exactly what the researcher paid.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch

from books import assert_books_balanced
from faultjobs import digits, first_event, wide_mlp

pytestmark = pytest.mark.timeout(600)

BATCH = 32
EVERY = 40
#: The trainer is stopped within this many seconds of the cancel (or the passed deadline).
STOP_BOUND_S = 5.0
STOPPED = r"award cancelled; trainer stopped"


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    # It claims to train 25x faster than it does here, so that it wins a job whose deadline
    # its bid says it will meet, and then runs past that deadline.
    return [{"worker_id": "w-solo", "owner": "owner-solo", "price": 1.0, "throughput": 1e11}]


class StopWatch:
    """Notes when the worker's next "trainer stopped" line appears (a reader thread awaits it,
    so the time is the line's arrival, not when the test got round to looking)."""

    def __init__(self, worker: Any) -> None:
        self.seen_before = sum(STOPPED in line for line in worker.lines["stderr"])
        self.at: float | None = None
        self._worker = worker
        self._thread = threading.Thread(target=self._await, daemon=True)
        self._thread.start()

    def _await(self) -> None:
        cond = self._worker._cond
        with cond:
            cond.wait_for(lambda: sum(STOPPED in line for line in self._worker.lines["stderr"]) > self.seen_before, 120)
        self.at = time.monotonic()

    def result(self) -> float:
        self._thread.join(130)
        assert self.at is not None, f"the worker never stopped its trainer:\n{self._worker.tail()}"
        return self.at


def steps_of(job: Any) -> int:
    return job.status().epochs * -(-len(digits()[0]) // BATCH)


def assert_settled_at_last_checkpoint(job: Any, final: hg.JobStatus, owner_gain: int, researcher_loss: int) -> None:
    """The owner was paid price × verified steps / steps, the researcher the same, the rest back."""
    events = job.events()
    awards = [e for e in events if isinstance(e, hg.Awarded)]
    assert len(awards) == 1, awards
    verified = max(e.step for e in events if isinstance(e, hg.Checkpointed))
    price = awards[0].price_micro
    expected = price * verified // steps_of(job)
    assert 0 < expected < price
    assert final.paid_micro == expected, (final, verified)
    assert owner_gain == expected
    assert researcher_loss == expected


def test_cancel_stops_the_trainer_and_pays_its_verified_checkpoints(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: Any
) -> None:
    operator.grant("carol", 20)
    carol = connect("carol")
    owner = connect("owner-solo")
    owner_before = owner.balance().micro
    before = carol.balance().micro
    x, y = digits()
    job = carol.submit(wide_mlp(), train=(x, y), epochs=60, batch_size=BATCH, lr=1e-3,
                       max_price=10, budget=5, checkpoint_every=EVERY)  # fmt: skip
    carol._run(first_event(carol, job.id, lambda e: isinstance(e, hg.Checkpointed) and e.step >= 2 * EVERY))

    watch = StopWatch(workers["w-solo"])
    sent = time.monotonic()
    cancelled = job.cancel()
    assert cancelled.state is hg.JobState.CANCELLED
    stopped_after = watch.result() - sent
    print(f"cancel → trainer stopped: {stopped_after:.3f} s")
    assert stopped_after <= STOP_BOUND_S, stopped_after

    final = job.wait(progress=False, timeout=60, raise_on_failure=False)
    assert final.state is hg.JobState.CANCELLED and final.reason_code == "cancelled"
    assert_settled_at_last_checkpoint(job, final, owner.balance().micro - owner_before, before - carol.balance().micro)

    # The worker is free again: the next job trains on it.
    again = carol.submit(torch.nn.Linear(64, 10), train=(x, y), epochs=2, batch_size=BATCH,
                         max_price=10, budget=5)  # fmt: skip
    done = again.wait(progress=False, timeout=300)
    assert done.state is hg.JobState.COMPLETED and done.worker == "w-solo"
    assert_books_balanced(nats_server)


def test_a_running_job_past_its_deadline_stops_and_pays_its_verified_checkpoints(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: Any
) -> None:
    operator.grant("dave", 20)
    dave = connect("dave")
    owner = connect("owner-solo")
    owner_before = owner.balance().micro
    before = dave.balance().micro
    x, y = digits()
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20)
    job = dave.submit(wide_mlp(), train=(x, y), epochs=200, batch_size=BATCH, lr=1e-3,
                      max_price=10, budget=5, checkpoint_every=EVERY, deadline=deadline)  # fmt: skip
    dave._run(first_event(dave, job.id, lambda e: isinstance(e, hg.Checkpointed)))
    watch = StopWatch(workers["w-solo"])
    stopped = watch.result()
    past_deadline = time.time() - (time.monotonic() - stopped) - deadline.timestamp()
    print(f"deadline → trainer stopped: {past_deadline:.3f} s")
    assert -0.5 <= past_deadline <= STOP_BOUND_S, past_deadline

    final = job.wait(progress=False, timeout=60, raise_on_failure=False)
    assert final.state is hg.JobState.EXPIRED and final.reason_code == "deadline_passed", final
    assert "training" in (final.reason or "")
    assert_settled_at_last_checkpoint(job, final, owner.balance().micro - owner_before, before - dave.balance().micro)
    assert_books_balanced(nats_server)


def test_a_queued_job_no_worker_can_take_expires_with_its_budget_back(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: Any
) -> None:
    operator.grant("erin", 3)
    erin = connect("erin")
    before = erin.balance().micro
    x, y = digits()
    job = erin.submit(torch.nn.Linear(64, 10), train=(x, y), epochs=2, batch_size=BATCH, max_price=10,
                      budget=2, min_memory_gb=100_000, deadline=6)  # fmt: skip
    waiting = erin._run(first_event(erin, job.id, lambda e: isinstance(e, hg.StateChanged) and e.state is hg.JobState.QUEUED and e.reason))
    assert waiting.reason
    final = job.wait(progress=False, timeout=60, raise_on_failure=False)
    assert final.state is hg.JobState.EXPIRED and final.reason_code == "deadline_passed", final
    assert final.worker is None and final.paid_micro == 0
    assert not any(isinstance(e, hg.Awarded) for e in job.events())
    assert erin.balance().micro == before
    assert_books_balanced(nats_server)
