"""The client against a real nats-server and a small in-test stand-in for the broker that speaks
the wire protocol of protocol/src/*.rs (MessagePack maps, the reply envelope, chunked artifacts,
job events in JetStream). It checks the client's side of the contract — uploads, downloads,
digests, event replay, errors, the sync facade inside a running event loop — without the Rust
binaries. The real broker is exercised by the other test_*.py files.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import helium_grid as hg
import msgpack
import nats
import pytest
import torch
from helium_grid import _subjects as subjects
from nats.js.api import StreamConfig

pytestmark = pytest.mark.timeout(120)

FAKE_WORKER = "fake-w1"
FAKE_OWNER = "fake-owner"
FAKE_MAX_CHUNK = 64 * 1024
FAKE_MAX_ARTIFACT = 4 * 1024 * 1024
SERVED = ("researcher", "operator")  # principals the stand-in answers; others get no responders
PRICE = 1_234


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


class WireError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _safetensors_shapes(blob: bytes) -> dict[str, list[int]]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _untrained_state(model: bytes) -> bytes:
    """The stand-in's result: a state file (tensors only) of the submitted model's own
    parameters and buffers, untrained."""
    from safetensors.torch import save

    module = torch.jit.load(io.BytesIO(model))  # the test's own model bytes
    tensors = {f"param/{n}": p.detach().contiguous() for n, p in module.named_parameters()}
    tensors |= {f"buffer/{n}": b.contiguous() for n, b in module.named_buffers()}
    return save(tensors)


@dataclass
class FakeBroker:
    """Just enough of helium-broker's API, written from the protocol crate."""

    nc: Any = None
    js: Any = None
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    staged: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], bytes] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    chunks_seen: int = 0
    cancelled: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, url: str, creds: str) -> None:
        self.nc = await nats.connect(url, user_credentials=creds)
        self.js = self.nc.jetstream()
        await self.js.add_stream(StreamConfig(name=subjects.EVENTS_STREAM, subjects=[subjects.EVENTS_SUBJECTS]))
        for principal in SERVED:
            await self.nc.subscribe(f"{subjects.PREFIX}.api.{principal}.*.*", cb=self.on_request)

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await self.nc.close()

    async def on_request(self, msg: Any) -> None:
        tokens = msg.subject.split(".")
        principal, verb = tokens[3], ".".join(tokens[4:])
        try:
            try:
                body = msgpack.unpackb(msg.data, raw=False)
            except Exception as e:
                raise WireError("bad_request", f"payload is not a MessagePack map: {e}") from e
            if not isinstance(body, dict):
                raise WireError("bad_request", "payload is not a map")
            if body.get("v") != 1:
                raise WireError("unsupported_version", f"protocol version {body.get('v')} is not supported")
            ok = await getattr(self, "api_" + verb.replace(".", "_"))(principal, body)
            reply: dict[str, Any] = {"v": 1, "ok": ok}
        except WireError as e:
            reply = {"v": 1, "error": {"code": e.code, "message": e.message}}
        except KeyError as e:
            reply = {"v": 1, "error": {"code": "bad_request", "message": f"missing field {e}"}}
        await msg.respond(msgpack.packb(reply, use_bin_type=True))

    # events: a consumer of the caller's events of one job, into the caller's inbox
    async def api_job_follow(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        start = b.get("start_seq") or 0
        config = ConsumerConfig(
            deliver_subject=b["deliver"],
            filter_subject=subjects.job_events(principal, b["job_id"]),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.ALL,
            opt_start_seq=start or None,
            ack_policy=AckPolicy.NONE,
            flow_control=True,
            idle_heartbeat=5,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=60,
        )
        info = await self.js.add_consumer(subjects.EVENTS_STREAM, config)
        return {"consumer": info.name, "pending": info.num_pending or 0}

    # artifacts
    async def api_artifact_begin(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        if b["size"] > FAKE_MAX_ARTIFACT:
            raise WireError("too_large", f"artifact of {b['size']} bytes is over {FAKE_MAX_ARTIFACT}")
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = {"principal": principal, "size": b["size"], "sha256": b["sha256"], "buf": bytearray()}
        return {"upload_id": upload_id, "max_chunk": FAKE_MAX_CHUNK}

    async def api_artifact_chunk(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        up = self.uploads.get(b["upload_id"])
        if up is None or up["principal"] != principal:
            raise WireError("not_found", "no such upload")
        if b["offset"] != len(up["buf"]):
            raise WireError("conflict", f"expected offset {len(up['buf'])}")
        if not isinstance(b["data"], bytes) or len(b["data"]) > FAKE_MAX_CHUNK:
            raise WireError("too_large", "chunk too large or not bin")
        up["buf"] += b["data"]
        self.chunks_seen += 1
        return {"received": len(up["buf"])}

    async def api_artifact_commit(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        up = self.uploads.pop(b["upload_id"])
        data = bytes(up["buf"])
        if len(data) != up["size"] or hashlib.sha256(data).hexdigest() != up["sha256"]:
            raise WireError("digest_mismatch", "upload does not match its declaration")
        self.staged[b["upload_id"]] = (principal, data)
        return {"name": b["upload_id"], "size": len(data), "sha256": up["sha256"]}

    async def api_artifact_read(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(b["job_id"])
        if job is None or job["principal"] != principal or (b["job_id"], b["name"]) not in self.artifacts:
            raise WireError("not_found", "no such artifact")
        data = self.artifacts[(b["job_id"], b["name"])]
        chunk = data[b["offset"] : b["offset"] + b["len"]]
        sha = hashlib.sha256(data).hexdigest()
        if job["name"] == "corrupt" and b["offset"] == 0:
            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
        return {"offset": b["offset"], "data": chunk, "size": len(data), "sha256": sha}

    # jobs
    async def api_job_submit(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        for key in ("model_upload", "data_upload"):
            owner, _ = self.staged.get(b[key], (None, b""))
            if owner != principal:
                raise WireError("not_found", f"no upload {b[key]}")
        shapes = _safetensors_shapes(self.staged[b["data_upload"]][1])
        if shapes["x"][0] != shapes["y"][0]:
            raise WireError("invalid_data", f"x has {shapes['x'][0]} samples, y has {shapes['y'][0]}")
        if b["training"]["loss"] not in hg.LOSSES:
            raise WireError("bad_request", f"unknown variant `{b['training']['loss']}`")
        budget = b["requirements"]["budget"]
        if self.balances.get(principal, 0) < budget:
            raise WireError("insufficient_funds", f"balance below the budget of {budget}")
        job_id = uuid.uuid4().hex
        view = {
            "job_id": job_id,
            "principal": principal,
            "name": b.get("name"),
            "state": "queued",
            "reason": None,
            "worker": None,
            "price": None,
            "paid": 0,
            "epochs": b["training"]["epochs"],
            "epochs_done": 0,
            "last_loss": None,
            "result": None,
            "created_ms": _now_ms(),
            "updated_ms": _now_ms(),
        }
        self.jobs[job_id] = view
        model = self.staged[b["model_upload"]][1]
        task = asyncio.get_running_loop().create_task(self.run(job_id, model))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return dict(view)

    async def event(self, job_id: str, kind: str, **fields: Any) -> None:
        job = self.jobs[job_id]
        ev = {"v": 1, "job_id": job_id, "at_ms": _now_ms(), "kind": kind, **fields}
        await self.js.publish(subjects.job_events(job["principal"], job_id), msgpack.packb(ev, use_bin_type=True))

    async def set_state(self, job_id: str, state: str, reason: str | None = None) -> None:
        self.jobs[job_id].update(state=state, reason=reason, updated_ms=_now_ms())
        await self.event(job_id, "state", state=state, reason=reason)

    async def run(self, job_id: str, model: bytes) -> None:
        job = self.jobs[job_id]
        delay = 0.3 if job["name"] == "slow" else 0.02
        await self.set_state(job_id, "queued", "auction opens shortly")
        await self.set_state(job_id, "auctioning")
        job.update(worker=FAKE_WORKER, price=PRICE)
        self.balances[job["principal"]] -= PRICE
        await self.event(job_id, "awarded", worker=FAKE_WORKER, bids=1, price=PRICE, eta_secs=0.1)
        await self.set_state(job_id, "assigned")
        await self.set_state(job_id, "running")
        for epoch in range(1, job["epochs"] + 1):
            await asyncio.sleep(delay)  # the stand-in's "training"
            if job_id in self.cancelled:
                return
            loss = 1.0 / epoch
            job.update(epochs_done=epoch, last_loss=loss)
            await self.event(job_id, "progress", epoch=epoch, epochs=job["epochs"], loss=loss, samples_per_sec=1e3)
        if job["name"] == "fail":
            self.balances[job["principal"]] += PRICE
            await self.set_state(job_id, "failed", "worker lost and no other bid")
            return
        result = _untrained_state(model)
        self.artifacts[(job_id, "result")] = result
        job.update(
            result={"name": "result", "size": len(result), "sha256": hashlib.sha256(result).hexdigest()}, paid=PRICE
        )
        self.balances[FAKE_OWNER] = self.balances.get(FAKE_OWNER, 0) + PRICE
        await self.set_state(job_id, "completed")

    async def api_job_status(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(b["job_id"])
        if job is None or job["principal"] != principal:
            raise WireError("not_found", f"no job {b['job_id']}")
        return dict(job)

    async def api_job_cancel(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        job = await self.api_job_status(principal, b)
        if job["state"] in ("completed", "failed", "cancelled", "expired"):
            raise WireError("conflict", "job already finished")
        self.cancelled.add(b["job_id"])
        self.balances[principal] += self.jobs[b["job_id"]]["price"] or 0
        await self.set_state(b["job_id"], "cancelled", "cancelled by the researcher")
        return dict(self.jobs[b["job_id"]])

    # accounts, workers
    async def api_account_balance(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        # Balance.micro is an i128: rmp_serde sends it as 16 big-endian bytes.
        return {"principal": principal, "micro": self.balances.get(principal, 0).to_bytes(16, "big", signed=True)}

    async def api_account_grant(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        if principal != "operator":
            raise WireError("unauthorized", f"{principal} is not an operator")
        self.balances[b["to"]] = self.balances.get(b["to"], 0) + b["micro"]
        return await self.api_account_balance(b["to"], {})

    async def api_worker_list(self, principal: str, b: dict[str, Any]) -> dict[str, Any]:
        return {"workers": [{
            "worker_id": FAKE_WORKER, "owner": FAKE_OWNER, "device": "cpu", "device_name": "fake",
            "memory_bytes": 2**30, "price_per_hour": 1_000_000, "throughput": 1e9, "busy_with": None, "alive": True,
        }]}  # fmt: skip


@pytest.fixture(scope="module")
def fake(nats_server: Any) -> Iterator[FakeBroker]:
    """The stand-in broker, on its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    broker = FakeBroker()
    asyncio.run_coroutine_threadsafe(broker.start(nats_server.url, str(nats_server.creds("broker", "fake-broker"))), loop).result(30)
    yield broker
    asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def grid(nats_server: Any, fake: FakeBroker) -> Iterator[hg.Grid]:
    with hg.Grid(nats_server.url, creds=nats_server.principal_creds("operator")) as op:
        op.grant("researcher", 10)
    with hg.Grid(nats_server.url, creds=nats_server.principal_creds("researcher")) as g:
        yield g


def small_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def submit(grid: hg.Grid, name: str | None = None, n: int = 32, epochs: int = 3, model: Any = None) -> hg.Job:
    x, y = torch.randn(n, 4), torch.randint(0, 3, (n,))
    return grid.submit(model or small_model(), train=(x, y), epochs=epochs, batch_size=8, lr=0.01,
                       max_price=1.0, budget=0.5, name=name)  # fmt: skip


def test_submit_wait_result_round_trip(grid: hg.Grid, fake: FakeBroker, capsys: pytest.CaptureFixture[str]) -> None:
    before = grid.balance()
    assert before.principal == "researcher" and before.credits > 0
    model = small_model()
    job = submit(grid, name="round-trip", model=model)
    assert job.submitted is not None and job.submitted.state is hg.JobState.QUEUED
    final = job.wait()
    assert final.state is hg.JobState.COMPLETED and final.worker == FAKE_WORKER
    assert final.epochs_done == 3 and final.last_loss == pytest.approx(1 / 3)
    err = capsys.readouterr().err
    assert "3/3" in err and "loss" in err  # the text progress bar
    trained = job.result()
    x = torch.randn(5, 4)
    assert torch.allclose(trained(x), model(x))  # the stand-in returns the model untrained
    events = job.events()
    kinds = [e.kind for e in events]
    assert kinds[0] == "state" and "awarded" in kinds and kinds[-1] == "state"
    assert [e.epoch for e in events if isinstance(e, hg.Progress)] == [1, 2, 3]
    awarded = next(e for e in events if isinstance(e, hg.Awarded))
    assert awarded.worker == FAKE_WORKER and awarded.price_micro == PRICE
    assert grid.balance().micro == before.micro - PRICE


def test_a_late_handle_replays_the_history(grid: hg.Grid) -> None:
    job = submit(grid)
    job.wait(progress=False)
    again = grid.job(job.id)
    assert again.wait(progress=False).state is hg.JobState.COMPLETED
    seen = list(again.follow())
    assert isinstance(seen[-1], hg.StateChanged) and seen[-1].state is hg.JobState.COMPLETED


def test_uploads_are_chunked_below_the_brokers_limit(grid: hg.Grid, fake: FakeBroker) -> None:
    before = fake.chunks_seen
    job = submit(grid, n=4000)  # 4000 × 4 floats = 64 000 bytes + header → 2 chunks of ≤ 64 KiB
    job.wait(progress=False)
    assert fake.chunks_seen - before >= 3  # model (1) + data (2)


def test_corrupted_download_is_a_digest_mismatch(grid: hg.Grid) -> None:
    job = submit(grid, name="corrupt")
    job.wait(progress=False)
    with pytest.raises(hg.DigestMismatch):
        job.result()


def test_failed_job_raises_and_cancel_stops(grid: hg.Grid) -> None:
    failing = submit(grid, name="fail")
    with pytest.raises(hg.JobFailed, match="worker lost") as info:
        failing.wait(progress=False)
    assert info.value.status.state is hg.JobState.FAILED  # type: ignore[attr-defined]
    assert failing.wait(progress=False, raise_on_failure=False).state is hg.JobState.FAILED

    slow = submit(grid, name="slow", epochs=50)
    with pytest.raises(hg.WaitTimeout):
        slow.wait(timeout=0.5, progress=False)
    with pytest.raises(hg.Conflict, match="no result"):
        slow.result()
    assert slow.cancel().state is hg.JobState.CANCELLED
    assert slow.wait(progress=False).state is hg.JobState.CANCELLED


def test_wire_errors_arrive_as_exceptions(grid: hg.Grid, nats_server: Any) -> None:
    with pytest.raises(hg.Unauthorized):
        grid.grant("researcher", 1)
    with pytest.raises(hg.NotFound):
        grid.job("nope").status()
    with pytest.raises(hg.NotFound):
        grid.job("nope").events()
    with pytest.raises(hg.BadRequest, match="job id"):
        grid.job("no.pe")
    with pytest.raises(hg.InsufficientFunds):
        grid.submit(small_model(), train=(torch.randn(8, 4), torch.randint(0, 3, (8,))), epochs=1, batch_size=4,
                    lr=0.1, max_price=1, budget=1e6)  # fmt: skip
    with pytest.raises(hg.TooLarge):
        submit(grid, n=300_000)  # 4.8 MB of x
    assert [w.worker_id for w in grid.workers()] == [FAKE_WORKER]


def test_no_broker_and_no_server_are_unavailable(nats_server: Any, fake: FakeBroker) -> None:
    with hg.Grid(nats_server.url, creds=nats_server.principal_creds("lonely"), timeout=2, outage_timeout=3) as lonely:
        # A read keeps asking through an outage, then gives up with Unavailable.
        started = time.monotonic()
        with pytest.raises(hg.Unavailable, match="no broker is answering on nats://"):
            lonely.balance()
        assert time.monotonic() - started >= 1.0, "gave up without riding out the outage"
        # A submit is not retried: it might have been taken.
        with pytest.raises(hg.Unavailable, match="no broker is answering on nats://"):
            lonely.submit(small_model(), train=(torch.randn(16, 4), torch.randint(0, 3, (16,))), epochs=1, batch_size=8, lr=0.1, max_price=1, budget=1)
    with pytest.raises(hg.Unavailable, match="cannot connect"):
        hg.Grid("nats://127.0.0.1:1", creds=nats_server.principal_creds("x"), connect_timeout=1)
    with pytest.raises(hg.BadRequest, match="principal"):
        hg.Grid(nats_server.url, principal="not.a.token")


def test_sync_grid_works_inside_a_running_event_loop(nats_server: Any, fake: FakeBroker) -> None:
    """Jupyter runs an event loop in the main thread; the sync facade must not care."""

    async def notebook_cell() -> float:
        with hg.Grid(nats_server.url, creds=nats_server.principal_creds("researcher")) as g:
            job = submit(g)
            job.wait(progress=False)
            return g.balance().credits

    assert asyncio.run(notebook_cell()) > 0


def test_async_core(nats_server: Any, fake: FakeBroker) -> None:
    async def main() -> hg.JobStatus:
        async with await hg.AsyncGrid.connect(nats_server.url, creds=nats_server.principal_creds("researcher")) as g:
            job = await g.submit(small_model(), train=(torch.randn(16, 4), torch.randint(0, 3, (16,))), epochs=2,
                                 batch_size=4, lr=0.1, max_price=1, budget=0.1)  # fmt: skip
            final = await job.wait(progress=False)
            module = await job.result()
            assert module(torch.randn(2, 4)).shape == (2, 3)
            assert len(await job.events()) >= 7
            return final

    assert asyncio.run(main()).state is hg.JobState.COMPLETED
