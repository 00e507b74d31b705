"""Bad input is refused with a clear error — by the client before any upload where it can tell,
and by the broker on the wire where a client could lie — and the grid keeps working: after each
case a good small job still completes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from typing import Any

import helium_grid as hg
import msgpack
import nats
import numpy as np
import pytest
import torch
from helium_grid import _subjects as subjects
from helium_grid._artifacts import upload
from helium_grid._state import manifest
from helium_grid._submission import quiet_torchscript
from safetensors.torch import save as save_safetensors

pytestmark = pytest.mark.timeout(300)

MAX_ARTIFACT = 1024 * 1024
#: Slow on paper (parameter-samples/s), so that a job's estimated cost is well above 1 µcredit.
THROUGHPUT = 1e7


@pytest.fixture(scope="module")
def broker_args() -> list[str]:
    return ["--max-artifact-bytes", str(MAX_ARTIFACT)]


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": "w-bad", "owner": "owner-bad", "price": 1.0, "throughput": THROUGHPUT}]


@pytest.fixture(scope="module")
def researcher(connect: Callable[[str], Any], operator: Any) -> Any:
    operator.grant("researcher", 100)
    return connect("researcher")


@pytest.fixture(scope="module")
def owner(connect: Callable[[str], Any]) -> Any:
    return connect("owner-bad")


@pytest.fixture()
def raw_nats(nats_server: Any) -> Iterator[Any]:
    """A bare nats-py connection for messages the client would never send, on its own loop."""
    loop = asyncio.new_event_loop()
    nc = loop.run_until_complete(
        nats.connect(
            nats_server.url,
            user_credentials=str(nats_server.creds("researcher", "researcher")),
            inbox_prefix="_INBOX.p.researcher",
        )
    )
    yield loop, nc
    loop.run_until_complete(nc.close())
    loop.close()


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def small_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


GOOD: dict[str, Any] = dict(epochs=2, batch_size=32, lr=1e-2, max_price=5.0, budget=1.0)


def a_good_job_completes(grid: Any) -> None:
    job = grid.submit(mlp(), train=small_data(), **GOOD, name="good")
    try:
        final = job.wait(timeout=90, progress=False)
    finally:
        if not job.status().is_terminal:
            job.cancel()  # keep the module's grid usable for the next case
    assert final.state is hg.JobState.COMPLETED, final
    assert job.result()(torch.randn(3, 64)).shape == (3, 10)


def raw_submit(grid: Any, x: torch.Tensor, y: torch.Tensor, *, loss: str = "cross_entropy") -> Any:
    """Upload a real model and hand-made data, then send job.submit as the client would not."""
    request = grid._async._request
    model = io.BytesIO()
    with quiet_torchscript():
        scripted = torch.jit.script(mlp())
        torch.jit.save(scripted, model)
    data = save_safetensors({"x": x.contiguous(), "y": y.contiguous()})
    model_upload, _ = grid._run(upload(request, "model", model.getvalue()))
    data_upload, _ = grid._run(upload(request, "data", data))
    body = {
        "model_upload": model_upload,
        "data_upload": data_upload,
        "training": {"epochs": 1, "batch_size": 8, "loss": loss, "optimizer": {"kind": "adam", "lr": 0.01}},
        "requirements": {"max_price_per_hour": 5_000_000, "budget": 1_000_000},
        "work": {"parameters": 2410, "samples": int(x.shape[0]), "epochs": 1},
        "name": "raw",
        "state": manifest(scripted),
    }
    return grid._run(request(subjects.JOB_SUBMIT, body))


class UsesNumpy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.from_numpy(np.tanh(self.lin(x).detach().numpy()))


def test_unscriptable_model_is_refused_before_upload(researcher: Any) -> None:
    before = researcher.balance()
    with pytest.raises(hg.InvalidModel, match=r"torch\.jit\.trace") as info:
        researcher.submit(UsesNumpy(), train=small_data(), **GOOD)
    assert "UsesNumpy" in str(info.value)
    assert researcher.balance() == before
    a_good_job_completes(researcher)


def test_mismatched_x_and_y(researcher: Any) -> None:
    x, y = small_data()
    with pytest.raises(hg.BadRequest, match="same number of samples"):
        researcher.submit(mlp(), train=(x, y[:-1]), **GOOD)
    with pytest.raises(hg.InvalidData) as info:
        raw_submit(researcher, x, y[:-1])
    assert info.value.code == "invalid_data"
    a_good_job_completes(researcher)


def test_unknown_loss(researcher: Any) -> None:
    with pytest.raises(hg.BadRequest, match="unknown loss 'hinge'"):
        researcher.submit(mlp(), train=small_data(), **{**GOOD, "loss": "hinge"})
    x, y = small_data()
    with pytest.raises(hg.BadRequest) as info:
        raw_submit(researcher, x, y, loss="hinge")
    assert info.value.code == "bad_request"
    a_good_job_completes(researcher)


def test_budget_below_every_bid(researcher: Any, owner: Any, connect: Any) -> None:
    """1 µcredit cannot pay for 50 epochs (estimated ≈ 0.0013 credits at 1 credit/h): the job
    waits in the queue with a reason that names the budget, shows in ``grid.jobs()`` (and only
    in its owner's), and no credits move."""
    before = (researcher.balance(), owner.balance())
    job = researcher.submit(mlp(), train=small_data(), **{**GOOD, "epochs": 50, "budget": 0.000001})
    try:
        reason = None
        for event in job.follow(timeout=60):
            if isinstance(event, hg.StateChanged) and event.reason and "budget" in event.reason.lower():
                reason = event.reason
                break
            assert not (isinstance(event, hg.StateChanged) and event.state.is_terminal), event
        assert reason is not None
        print(f"queued: {reason}")
        status = job.status()
        assert status.state is hg.JobState.QUEUED and "budget" in (status.reason or "").lower()
        assert status.worker is None and status.paid_micro == 0
        listed = {s.job_id: s for s in researcher.jobs()}
        assert listed[job.id].state is hg.JobState.QUEUED
        assert job.id not in {s.job_id for s in connect("someone-else").jobs()}
    finally:
        if not job.status().is_terminal:
            assert job.cancel().state is hg.JobState.CANCELLED
    assert job.wait(timeout=30, progress=False).state is hg.JobState.CANCELLED
    assert (researcher.balance(), owner.balance()) == before
    a_good_job_completes(researcher)


def test_artifact_over_the_size_limit(researcher: Any) -> None:
    before = researcher.balance()
    x = torch.randn(8192, 64)  # 2 MiB of float32
    with pytest.raises(hg.TooLarge):
        researcher.submit(mlp(), train=(x, torch.randint(0, 10, (8192,))), **GOOD)
    with pytest.raises(hg.TooLarge):
        researcher._run(upload(researcher._async._request, "data", bytes(2 * MAX_ARTIFACT)))
    assert researcher.balance() == before
    a_good_job_completes(researcher)


def test_malformed_messages_get_clear_error_replies(researcher: Any, raw_nats: Any) -> None:
    loop, nc = raw_nats

    def ask(verb: str, payload: bytes) -> dict[str, Any]:
        msg = loop.run_until_complete(nc.request(subjects.api("researcher", verb), payload, timeout=10))
        reply = msgpack.unpackb(msg.data, raw=False)
        assert reply["v"] == 1 and "ok" not in reply, reply
        return reply["error"]

    for verb in (subjects.JOB_SUBMIT, subjects.ACCOUNT_BALANCE, subjects.ARTIFACT_CHUNK):
        error = ask(verb, b"\xc1 this is not msgpack")
        assert error["code"] == "bad_request" and error["message"], error
        error = ask(verb, msgpack.packb({"v": 99}))
        assert error["code"] == "unsupported_version" and "99" in error["message"], error
    error = ask(subjects.JOB_STATUS, msgpack.packb({"v": 1, "job": "wrong field name"}))
    assert error["code"] == "bad_request", error
    a_good_job_completes(researcher)


# -- what cannot train is refused by the client's trial step, before any upload -----------------


class Detached(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).detach()


def regressor() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[5, 7] = float("nan")
    return x


X, Y = small_data()
# (case, model, submit arguments, error class, facts the message must state)
CANNOT_TRAIN: list[tuple[str, Callable[[], torch.nn.Module], dict[str, Any], type[Exception], list[str]]] = [
    (
        "mse of (N, 1) against (N,)",
        regressor,
        {"train": (X, torch.randn(200)), "loss": "mse"},
        hg.InvalidData,
        ["mse:", "(32, 1) (float32)", "y[:32] has shape (32,) (float32)", "broadcast to (32, 32)", "y.unsqueeze(1)"],
    ),
    (
        "cross_entropy over a single output",
        regressor,
        {"train": (X, torch.zeros(200, dtype=torch.long))},
        hg.InvalidModel,
        ["cross_entropy over a single output", "has shape (32, 1) (float32)"],
    ),
    (
        "class label 10 of 10 classes",
        mlp,
        {"train": (X, torch.where(Y == 0, 10, Y))},
        hg.InvalidData,
        ["labels from 1 to 10", "outputs 10 classes", "(32, 10)", "0…9"],
    ),
    (
        "a non-finite loss",
        mlp,
        {"train": (with_nan(X), Y)},
        hg.InvalidData,
        ["loss on x[:32] is nan", "x[:32] holds 1 NaN or infinite values"],
    ),
    (
        "a loss no parameter reaches",
        Detached,
        {"train": (X, Y)},
        hg.InvalidModel,
        ["depends on none of the model's trainable parameters"],
    ),
    (
        "validation targets that would broadcast",
        regressor,
        {"train": (X, torch.randn(200, 1)), "validation": (X[:50], torch.randn(50)), "loss": "mse"},
        hg.InvalidData,
        ["x_val[:32] has shape (32, 1)", "y_val[:32] has shape (32,)", "broadcast to (32, 32)"],
    ),
]


@pytest.mark.parametrize(
    ("make", "change", "error", "facts"), [c[1:] for c in CANNOT_TRAIN], ids=[c[0] for c in CANNOT_TRAIN]
)
def test_what_cannot_train_is_refused_before_upload(
    researcher: Any,
    make: Callable[[], torch.nn.Module],
    change: dict[str, Any],
    error: type[Exception],
    facts: list[str],
) -> None:
    before, jobs = researcher.balance(), len(researcher.jobs())
    with pytest.raises(error) as info:
        researcher.submit(make(), **{**GOOD, **change})
    message = str(info.value)
    print(f"{type(info.value).__name__}: {message}")
    for fact in facts:
        assert fact in message, f"{fact!r} not in {message!r}"
    assert len(researcher.jobs()) == jobs, "a job reached the grid"
    assert researcher.balance() == before
    a_good_job_completes(researcher)
