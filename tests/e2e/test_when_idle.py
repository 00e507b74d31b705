"""The owner's terms through the real grid: a worker started ``--when-idle`` is preempted when
its owner starts using the machine, and a worker outside its ``--hours`` declines, saying why.

The cheaper of two bidding workers, ``w-idle``, runs ``--when-idle --busy-above 0.4``. It wins
the job; once the broker has verified a checkpoint, the test loads every core with busy loops
(the "owner"). The worker's sampling of ``/proc`` sees others use most of the machine, stops
the trainer and reports the run ``cancelled``: the broker pays it exactly the job's steps up to
the last verified checkpoint (as for a lost worker) and resumes the job from there on
``w-awake``, which completes it with the accuracy of an uninterrupted run. A third, cheapest
worker, ``w-night``, takes jobs only in a window of hours that excludes now: its heartbeats say
it is paused "outside the owner's hours", so the grid shows why and never invites it. It ends
with the books audited.

The machine's load is real, so other work on it (a build beside the test) can keep ``w-idle``
paused: the test waits for it to say it is available before submitting, and fails (saying so)
if such work took the machine back before the auction.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import helium_grid as hg
import pytest

from books import assert_books_balanced
from faultjobs import assert_accuracy_as_uninterrupted, digits, first_event, reference_accuracy, wide_mlp

from conftest import NatsServer

pytestmark = pytest.mark.timeout(600)

EPOCHS = 24
BATCH = 32
EVERY = 20
#: Others' share of the machine above which ``w-idle`` is the owner's. A busy loop per core
#: beside the worker's one-thread trainer takes about two thirds of the machine or more.
BUSY_ABOVE = 0.4


def hours_excluding_now() -> str:
    """A one-hour window starting two hours from now (local time, as the worker reads it)."""
    now = datetime.now()
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    return f"{start:%H:%M}-{end:%H:%M}"


NIGHT = hours_excluding_now()


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-night", "owner": "owner-night", "price": 0.5, "extra": ("--hours", NIGHT)},
        {"worker_id": "w-idle", "owner": "owner-idle", "price": 1.0,
         "extra": ("--when-idle", "--busy-above", str(BUSY_ABOVE), "--idle-after", "3s")},
        {"worker_id": "w-awake", "owner": "owner-awake", "price": 3.0},
    ]  # fmt: skip


def cores() -> int:
    return len(os.sched_getaffinity(0))


def short(job_id: str) -> str:
    """The worker's short form of a job id in its log lines."""
    return job_id[:8] + "…" if len(job_id) > 10 else job_id


def test_the_owner_taking_the_machine_back_preempts_the_run_which_is_paid_and_resumes(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: NatsServer
) -> None:
    operator.grant("alice", 20)
    alice = connect("alice")
    x, y = digits()
    steps_per_epoch = -(-len(x) // BATCH)
    total_steps = EPOCHS * steps_per_epoch
    idle = workers["w-idle"]
    # Other work on this machine (a build beside the test) keeps it paused: wait it out, until
    # the registry too has heard (the worker heartbeats at once when its pause ends).
    idle.wait_for_line("stderr", r"available: taking jobs", timeout=300)
    deadline = time.monotonic() + 10
    while next(w for w in alice.workers() if w.worker_id == "w-idle").paused is not None:
        assert time.monotonic() < deadline, "the registry still has w-idle paused"
        time.sleep(0.1)  # polling the registry: a heartbeat's arrival publishes nothing to await

    job = alice.submit(wide_mlp(), train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3,
                       max_price=10, budget=5, checkpoint_every=EVERY)  # fmt: skip
    alice._run(first_event(alice, job.id, lambda e: e.kind == "checkpointed"))
    assert job.status().worker == "w-idle", "w-idle was not idle when the job was auctioned (another load on this machine?)"

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores())]
    try:
        lost = alice._run(first_event(alice, job.id, lambda e: isinstance(e, hg.StateChanged) and e.state is hg.JobState.QUEUED and e.reason))
        # The worker said why, with the owner's share of the CPU.
        preempted = idle.wait_for_line("stderr", rf"preempting the run: the owner is using this machine \(CPU (\d+) % busy\).*job={job.id}", timeout=30)
        assert int(preempted.group(1)) > BUSY_ABOVE * 100
        idle.wait_for_line("stderr", rf"preempted for the owner; trainer stopped.*job={job.id}", timeout=30)
        resumed = alice._run(first_event(alice, job.id, lambda e: isinstance(e, hg.Awarded) and e.worker != "w-idle"))
        assert resumed.worker == "w-awake"
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
    # Reported `cancelled` (preemption), which the broker treats as a lost worker, not a failed one.
    assert "worker w-idle was lost" in (lost.reason or ""), lost.reason
    final = job.wait(progress=False, timeout=400)
    assert final.state is hg.JobState.COMPLETED
    # Its settlement may reach the journal after its last event: audit first (it waits for that).
    assert_books_balanced(nats_server)

    events = job.events()
    at_loss = next(i for i, e in enumerate(events) if isinstance(e, hg.StateChanged) and e.state is hg.JobState.QUEUED and e.reason)
    before = [e.raw["step"] for e in events[:at_loss] if e.kind == "checkpointed"]
    assert before
    resumed_at = before[-1]
    assert f"resuming from epoch {resumed_at // steps_per_epoch}" in (events[at_loss].reason or "")
    awards = [e for e in events if isinstance(e, hg.Awarded)]
    assert [a.worker for a in awards] == ["w-idle", "w-awake"]
    # Paid the job's steps up to the last verified checkpoint, to the micro-credit.
    expected_pay = awards[0].price_micro * resumed_at // total_steps
    assert connect("owner-idle").balance().micro == expected_pay
    assert final.paid_micro == expected_pay + connect("owner-awake").balance().micro
    # The owner's status line shows what the award earned.
    idle.wait_for_line("stderr", re.escape(f"earned {expected_pay / 1e6:.6f} credits (1 job settled)"), timeout=30)

    # The worker that lost the first auction was told why, and logged it.
    workers["w-awake"].wait_for_line("stderr", rf"lost job {re.escape(short(job.id))}: .*job={job.id}", timeout=5)
    # The worker outside its hours is paused: the grid shows why and never invited it.
    night = next(w for w in alice.workers() if w.worker_id == "w-night")
    assert (night.paused or "").startswith("outside the owner's hours"), night
    assert job.id not in set(connect("owner-night").worker_log("w-night").job), "a paused worker was invited"
    assert connect("owner-night").balance().micro == 0

    reference = reference_accuracy(wide_mlp(), x, y, epochs=EPOCHS, batch_size=BATCH, lr=1e-3)
    assert_accuracy_as_uninterrupted(job.result(), reference, x, y)
    assert_books_balanced(nats_server)
