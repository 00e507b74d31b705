"""Bounds the real worker keeps (docs/PROTOCOL.md §2, "Bounds"): an award whose ``award_id``
is path-like is refused before the worker touches its file system, and a model that fails
with a 2 MiB message fails its job with the reason truncated; the job settles, the hold goes
back, and the same worker then completes a good job. The broker's own bounds (asks, bids,
quotas, streams) are tested in ``broker-actors/tests/bounds.rs``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helium_grid as hg
import msgpack
import nats
import pytest
import torch
from torch import Tensor

pytestmark = pytest.mark.timeout(300)

WORKER = "w-bounds"
MAX_REASON_BYTES = 4096


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": WORKER, "owner": "owner-bounds", "price": 1.0}]


@pytest.fixture(scope="module")
def researcher(connect: Callable[[str], Any], operator: Any) -> Any:
    operator.grant("researcher", 100)
    return connect("researcher")


class LoudFailure(torch.nn.Module):
    """Raises with a 2 MiB message on the first batch."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        self.message = "overflow " * (2 * 1024 * 1024 // 9)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 0:
            raise RuntimeError(self.message)
        return self.lin(x)


def award(award_id: str) -> dict[str, Any]:
    info = lambda name: {"name": name, "size": 1, "sha256": "ab" * 32}  # noqa: E731
    return {
        "v": 1,
        "job_id": "job-of-nobody",
        "award_id": award_id,
        "training": {"epochs": 1, "batch_size": 1, "loss": "mse", "optimizer": {"kind": "sgd", "lr": 0.1}},
        "work": {"parameters": 1, "samples": 1, "epochs": 1},
        "model": info("model"),
        "data": info("data"),
        "price": 1,
    }


def test_path_like_award_ids_are_refused_before_the_worker_touches_its_files(
    nats_server: Any, researcher: Any, grid_dir: Path, a_good_job_completes: Callable[[Any], None]
) -> None:
    work_dir = grid_dir / "workers" / WORKER
    work_dir.mkdir(parents=True, exist_ok=True)
    kept = work_dir / "kept.bin"
    kept.write_bytes(b"the worker's own file")
    outside = grid_dir / "workers" / "x"

    async def send_all() -> list[dict[str, Any]]:
        # Only the broker may publish on a worker's dispatch subjects: its credential.
        nc = await nats.connect(nats_server.url, user_credentials=str(nats_server.creds("broker", "broker")))
        try:
            answers = []
            for award_id in ("../x", "a/b", ".", "..", "x" * 65):
                msg = await nc.request(
                    f"helium.v1.dispatch.{WORKER}.job.award", msgpack.packb(award(award_id)), timeout=10
                )
                answers.append(msgpack.unpackb(msg.data))
            return answers
        finally:
            await nc.close()

    for reply in asyncio.run(send_all()):
        ack = reply["ok"]
        assert ack["accepted"] is False, reply
        assert "award_id" in ack["reason"] and "never a path" in ack["reason"], reply
    assert kept.read_bytes() == b"the worker's own file"
    assert not outside.exists() and not (work_dir / "a").exists()
    # The worker is unharmed and takes the next real job.
    a_good_job_completes(researcher)


def test_a_2_mib_failure_reason_fails_the_job_with_the_reason_truncated(
    researcher: Any, submit_hostile: Callable[..., Any], a_good_job_completes: Callable[[Any], None]
) -> None:
    before = researcher.balance()
    job = submit_hostile(researcher, LoudFailure(), name="loud")
    final = job.wait(timeout=120, progress=False, raise_on_failure=False)
    assert final.state is hg.JobState.FAILED, final
    reason = final.reason or ""
    assert "overflow overflow" in reason and reason.endswith("[truncated]"), reason[-80:]
    assert len(reason.encode()) <= MAX_REASON_BYTES
    # Settled: nothing was checkpointed, so the whole hold came back.
    assert researcher.balance() == before
    a_good_job_completes(researcher)
