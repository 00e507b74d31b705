"""The broker SIGKILLed mid-run and restarted, through the real grid.

The researcher's ``job.wait()`` rides the outage out (it neither raises nor times out); the
worker keeps training, finishes while no broker answers, keeps offering its result, and delivers
it after the restart. Nothing is trained twice (one award, checkpoints only ever moving forward)
and nothing is paid twice (the owner holds exactly the award's price; the researcher paid it
once).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helium_grid as hg
import pytest

from books import assert_books_balanced
from faultjobs import assert_accuracy_as_uninterrupted, digits, first_event, reference_accuracy, wide_mlp

from conftest import NatsServer, start_broker

pytestmark = pytest.mark.timeout(600)

EPOCHS = 6
BATCH = 32


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": "w-steady", "owner": "owner-steady", "price": 1.0, "throughput": 1e9}]


class Broker:
    """The module's broker, replaceable: a test kills it and starts another on the same data."""

    def __init__(self, root: Path, nats: NatsServer, args: list[str]) -> None:
        self.root, self.nats, self.args = root, nats, args
        self.proc = start_broker(root, nats, args)

    def kill(self) -> None:
        self.proc.popen.kill()
        self.proc.popen.wait()
        self.proc.stop()

    def restart(self) -> None:
        self.proc = start_broker(self.root, self.nats, self.args)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def broker(grid_dir: Path, nats_server: NatsServer, broker_args: list[str]) -> Iterator[Broker]:
    b = Broker(grid_dir, nats_server, broker_args)
    yield b
    b.stop()


def test_a_broker_restart_mid_run_loses_nothing_and_pays_once(
    connect: Callable[[str], Any], operator: Any, broker: Broker, workers: dict[str, Any], nats_server: NatsServer
) -> None:
    operator.grant("alice", 20)
    alice = connect("alice")
    before = alice.balance().micro
    x, y = digits()
    job = alice.submit(wide_mlp(), train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=1e-3,
                       max_price=10, budget=5, checkpoint_every=20)  # fmt: skip
    alice._run(first_event(alice, job.id, lambda e: e.kind == "checkpointed"))

    broker.kill()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(job.wait, progress=False, timeout=400)
        # The worker finishes with no broker to take its result, and keeps offering it.
        workers["w-steady"].wait_for_line("stderr", r"result upload: broker not answering; retrying", timeout=300)
        assert not waiting.done(), "wait() returned while the broker was down"
        broker.restart()
        final = waiting.result(timeout=400)

    assert final.state is hg.JobState.COMPLETED, final
    events = job.events()
    awards = [e for e in events if isinstance(e, hg.Awarded)]
    assert [a.worker for a in awards] == ["w-steady"], "the job was trained again elsewhere"
    steps = [e.raw["step"] for e in events if e.kind == "checkpointed"]
    assert steps == sorted(set(steps)), f"checkpoints moved back: {steps}"
    price = awards[0].price_micro
    assert final.paid_micro == price
    assert connect("owner-steady").balance().micro == price, "the owner was not paid exactly once"
    assert alice.balance().micro == before - price
    reference = reference_accuracy(wide_mlp(), x, y, epochs=EPOCHS, batch_size=BATCH, lr=1e-3)
    assert reference > 0.9, reference
    assert_accuracy_as_uninterrupted(job.result(), reference, x, y)
    assert_books_balanced(nats_server)
