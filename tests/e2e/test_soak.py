"""A randomized soak over real processes: many short jobs on three workers while the broker and
the workers are SIGKILLed, paused and restarted at random, and some jobs cancelled.

The schedule (which job when, which fault when, which cancel) comes from one seed, printed at
the start and in every failure, so a failing run is replayed by ``HELIUM_SOAK_SEED=<seed>``:
the same decisions in the same order (real processes' timing still varies; most faults pick
a worker that is training at that moment, so they hit runs).
It is bounded in count (``HELIUM_SOAK_JOBS``, ``HELIUM_SOAK_FAULTS``) and in time (every job
must end within ``HELIUM_SOAK_SECONDS`` of the last fault). At the end it checks what the
simulator checks after every step, here from outside: every job ended; every job not
cancelled completed with a model that learned the task; checkpoints of a job only ever moved
forward; the money moved only from the researcher to the owners, and all of it as the jobs
say: the researcher spent exactly the sum of what the jobs paid, which is exactly the sum the
owners earned.

The gaps between actions are the schedule's pacing (load, not synchronisation): each fault
itself is awaited on its events (a process's exit, a restarted process's ``ready`` line).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helium_grid as hg
import pytest
import torch

from books import assert_books_balanced
from faultjobs import assert_accuracy_as_uninterrupted, digits, first_event, reference_accuracy

from conftest import NatsServer, Proc, WorkerSpec, start_broker, start_worker

SEED = int(os.environ.get("HELIUM_SOAK_SEED", random.SystemRandom().randrange(1 << 32)))
JOBS = int(os.environ.get("HELIUM_SOAK_JOBS", "10"))
FAULTS = int(os.environ.get("HELIUM_SOAK_FAULTS", "5"))
SECONDS = float(os.environ.get("HELIUM_SOAK_SECONDS", "300"))
BATCH = 32

# The schedule's actions take up to ~30 s each (a restart, a pause), then the jobs must end.
pytestmark = pytest.mark.timeout(int(SECONDS + 30 * (JOBS + FAULTS) + 120))

SPECS = [
    WorkerSpec(worker_id="w-a", owner="owner-a", price=1.0),
    WorkerSpec(worker_id="w-b", owner="owner-b", price=2.0),
    WorkerSpec(worker_id="w-c", owner="owner-c", price=3.0),
]


class Grid:
    """The module's broker and workers, each replaceable: the soak kills and restarts them."""

    def __init__(self, root: Path, nats: NatsServer, broker_args: list[str]) -> None:
        self.root, self.nats, self.broker_args = root, nats, broker_args
        self.broker = start_broker(root, nats, broker_args)
        self.workers: dict[str, Proc] = {s.worker_id: start_worker(root, nats, s) for s in SPECS}

    def kill(self, proc: Proc) -> None:
        proc.popen.kill()
        proc.popen.wait()
        proc.stop()

    def restart_broker(self) -> None:
        self.kill(self.broker)
        self.broker = start_broker(self.root, self.nats, self.broker_args)

    def restart_worker(self, worker_id: str) -> None:
        self.kill(self.workers[worker_id])
        spec = next(s for s in SPECS if s.worker_id == worker_id)
        self.workers[worker_id] = start_worker(self.root, self.nats, spec)

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.broker]:
            proc.stop()


@pytest.fixture(scope="module")
def soak_grid(grid_dir: Path, nats_server: NatsServer, broker_args: list[str]) -> Iterator[Grid]:
    g = Grid(grid_dir, nats_server, broker_args)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def broker(soak_grid: Grid) -> Proc:
    return soak_grid.broker


@pytest.fixture(scope="module")
def workers(soak_grid: Grid) -> dict[str, Proc]:
    return soak_grid.workers


@dataclass
class Plan:
    """The seeded schedule: actions in order, each after a gap (seconds)."""

    actions: list[tuple[float, str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, rng: random.Random) -> Plan:
        kinds = ["submit"] * JOBS + ["fault"] * FAULTS + ["cancel"] * max(1, JOBS // 5)
        rng.shuffle(kinds)
        # The first action submits, so a fault has something to hit.
        kinds.remove("submit")
        kinds.insert(0, "submit")
        plan = cls()
        job = 0
        for kind in kinds:
            gap = rng.uniform(0.0, 2.0)
            if kind == "submit":
                arg: Any = dict(
                    index=job,
                    hidden=rng.choice([0, 256, 1024, 1024]),
                    epochs=rng.randint(4, 12),
                    checkpoint_every=rng.choice([10, 25, 60]),
                )
                job += 1
            elif kind == "fault":
                arg = dict(
                    what=rng.choice(["kill-broker", "kill-worker", "kill-worker", "pause-worker"]),
                    # Most faults hit the worker of a job that is training, if one is.
                    busy=rng.random() < 0.8,
                    pick=rng.random(),
                    down_for=rng.uniform(0.0, 7.0),
                )
            else:
                arg = dict(pick=rng.random())
            plan.actions.append((gap, kind, arg))
        return plan


def model(hidden: int) -> torch.nn.Module:
    """A linear model (an epoch in milliseconds) up to a wide MLP (half a second an epoch on
    one thread), so that faults find runs to hit."""
    if hidden == 0:
        return torch.nn.Linear(64, 10)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )  # fmt: skip


def training_worker(researcher: Any, jobs: list[Any]) -> str | None:
    """The worker of the newest job still open, once that job has a verified checkpoint (so a
    fault now costs it work); ``None`` when every job has ended."""
    for job in reversed(jobs):
        if job.status().is_terminal:
            continue

        def mid_run(e: hg.JobEvent) -> bool:
            return isinstance(e, hg.Checkpointed) or (isinstance(e, hg.StateChanged) and e.state.is_terminal)

        try:
            event = researcher._run(first_event(researcher, job.id, mid_run))
        except AssertionError:
            continue  # it ended meanwhile
        status = job.status()
        if isinstance(event, hg.Checkpointed) and not status.is_terminal and status.worker:
            return str(status.worker)
    return None


def test_a_randomized_soak_of_kills_pauses_and_cancels_loses_nothing_and_pays_right(
    soak_grid: Grid, connect: Callable[[str], Any], operator: Any, nats_server: NatsServer
) -> None:
    print(f"\nsoak seed {SEED} (replay: HELIUM_SOAK_SEED={SEED}); {JOBS} jobs, {FAULTS} faults")
    rng = random.Random(SEED)
    plan = Plan.of(rng)
    why = f" (seed {SEED})"

    operator.grant("soak", 200)
    researcher = connect("soak")
    start_balance = researcher.balance().micro
    x, y = digits()
    jobs: list[Any] = []
    shapes: dict[str, dict[str, Any]] = {}
    cancelled: set[str] = set()
    log: list[str] = []

    for gap, kind, arg in plan.actions:
        time.sleep(gap)  # the schedule's pacing, not a wait for anything
        if kind == "submit":
            torch.manual_seed(arg["index"])
            job = researcher.submit(model(arg["hidden"]), train=(x, y), epochs=arg["epochs"], batch_size=BATCH,
                                    lr=1e-2 if arg["hidden"] == 0 else 1e-3, max_price=10, budget=5, checkpoint_every=arg["checkpoint_every"],
                                    name=f"soak-{arg['index']}")  # fmt: skip
            jobs.append(job)
            shapes[job.id] = arg
            log.append(f"submit {job.id} {arg}")
        elif kind == "cancel" and jobs:
            live = [j for j in jobs if not j.status().is_terminal] or jobs
            job = live[int(arg["pick"] * len(live))]
            try:
                job.cancel()
                cancelled.add(job.id)
                log.append(f"cancel {job.id}")
            except hg.Conflict:
                log.append(f"cancel {job.id}: already ended")
        elif kind == "fault":
            what, down_for = arg["what"], arg["down_for"]
            worker = training_worker(researcher, jobs) if arg["busy"] else None
            target = f" {worker} (training)" if worker else ""
            if worker is None:
                worker = sorted(soak_grid.workers)[int(arg["pick"] * len(soak_grid.workers))]
                target = f" {worker}"
            target = target if "worker" in what else ""
            log.append(f"{what}{target} for {down_for:.1f}s")
            if what == "kill-broker":
                soak_grid.kill(soak_grid.broker)
                time.sleep(down_for)  # how long the grid is without a broker: the fault itself
                soak_grid.broker = start_broker(soak_grid.root, soak_grid.nats, soak_grid.broker_args)
            elif what == "kill-worker":
                soak_grid.kill(soak_grid.workers[worker])
                time.sleep(down_for)
                soak_grid.restart_worker(worker)
            else:
                pid = soak_grid.workers[worker].popen.pid
                os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(down_for)
                finally:
                    os.kill(pid, signal.SIGCONT)

    trail = why + "\n" + "\n".join(log)
    ends: dict[str, hg.JobStatus] = {}
    deadline = time.monotonic() + SECONDS
    for job in jobs:
        left = max(1.0, deadline - time.monotonic())
        ends[job.id] = job.wait(progress=False, timeout=left, raise_on_failure=False)

    paid = resumed = 0
    for job in jobs:
        final = ends[job.id]
        assert final.is_terminal, f"{job.id} did not end: {final}{trail}"
        if job.id in cancelled:
            assert final.state is hg.JobState.CANCELLED, f"{final}{trail}"
        else:
            assert final.state is hg.JobState.COMPLETED, f"{final}{trail}"
        events = job.events()
        steps = [e.step for e in events if isinstance(e, hg.Checkpointed)]
        awards = [e for e in events if isinstance(e, hg.Awarded)]
        # A resume starts from the last verified checkpoint, so even across awards they only
        # move forward; a lost worker's late ones are refused, never published.
        assert steps == sorted(set(steps)), f"{job.id} checkpoints moved back: {steps}{trail}"
        assert final.paid_micro <= sum(a.price_micro for a in awards), f"{final}{trail}"
        resumed += len(awards) > 1
        if final.state is hg.JobState.COMPLETED:
            with torch.no_grad():
                accuracy = (job.result()(x).argmax(1) == y).float().mean().item()
            assert accuracy > 0.85, f"{job.id} learned too little: {accuracy}{trail}"
            if len(awards) > 1:
                # Resumed after a fault: as good as the same job run without one.
                shape = shapes[job.id]
                torch.manual_seed(shape["index"])
                untrained = model(shape["hidden"])
                reference = reference_accuracy(untrained, x, y, epochs=shape["epochs"], batch_size=BATCH,
                                               lr=1e-2 if shape["hidden"] == 0 else 1e-3)  # fmt: skip
                assert_accuracy_as_uninterrupted(job.result(), reference, x, y)
        paid += final.paid_micro

    spent = start_balance - researcher.balance().micro
    earned = sum(connect(s.owner).balance().micro for s in SPECS)
    assert spent == paid, f"the researcher spent {spent}, the jobs say {paid}{trail}"
    assert earned == paid, f"the owners earned {earned}, the jobs paid {paid}{trail}"
    assert_books_balanced(nats_server)
    print(f"soak seed {SEED}: {len(jobs)} jobs, {len(cancelled)} cancelled, {resumed} resumed on another award, "
          f"paid {paid} µcredits\n" + "\n".join(log))  # fmt: skip
