"""Pure unit tests: money and time units, chunking and digests, the wire codec and the error
mapping. No network, no grid."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import helium_grid
import msgpack
import pytest
from helium_grid import errors
from helium_grid._artifacts import chunk_for_payload, chunk_size, iter_chunks, sha256_hex
from helium_grid._limits import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MICRO_PER_CREDIT,
    credits_to_micro,
    deadline_to_ms,
    micro_to_credits,
)
from helium_grid._wire import decode, encode, request_body, unwrap_reply, wire_int
from helium_grid.records import (
    Awarded,
    Balance,
    JobEvent,
    JobState,
    JobStatus,
    Progress,
    StateChanged,
    WorkerInfo,
    parse_event,
)


def test_limits_match_the_rust_protocol() -> None:
    assert MAX_CHUNK_BYTES == 4 * 1024 * 1024
    assert DEFAULT_CHUNK_BYTES == 1024 * 1024 - 64 * 1024
    assert MICRO_PER_CREDIT == 1_000_000


@pytest.mark.parametrize(
    ("credits", "micro"),
    [
        (0, 0),
        (1, 1_000_000),
        (0.1, 100_000),
        ("0.000001", 1),
        (Decimal("2.5"), 2_500_000),
        (100, 100_000_000),
        (0.0000004, 0),
        (0.0000006, 1),
        (1e-6, 1),
    ],
)
def test_credits_to_micro_is_exact(credits: object, micro: int) -> None:
    assert credits_to_micro(credits) == micro  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "lots", True, 2**70])
def test_credits_to_micro_refuses_nonsense(bad: object) -> None:
    with pytest.raises(errors.BadRequest):
        credits_to_micro(bad)  # type: ignore[arg-type]


def test_micro_to_credits_round_trips() -> None:
    assert micro_to_credits(credits_to_micro(12.345678)) == pytest.approx(12.345678)
    assert Balance("a", 1_500_000).credits == 1.5


def test_deadlines() -> None:
    assert deadline_to_ms(None) == 0
    assert deadline_to_ms(2.5, now=100.0) == 102_500
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert deadline_to_ms(future) == int(future.timestamp() * 1000)
    with pytest.raises(errors.BadRequest, match="past"):
        deadline_to_ms(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
    for bad in (0, -5, float("nan"), "soon"):
        with pytest.raises(errors.BadRequest):
            deadline_to_ms(bad)  # type: ignore[arg-type]


def test_chunks_cover_the_data_in_order() -> None:
    data = bytes(range(256)) * 41  # 10 496 bytes
    chunks = list(iter_chunks(data, 1000))
    assert [off for off, _ in chunks] == list(range(0, len(data), 1000))
    assert all(len(c) == 1000 for _, c in chunks[:-1]) and len(chunks[-1][1]) == 496
    assert b"".join(c for _, c in chunks) == data
    assert list(iter_chunks(b"", 10)) == []
    with pytest.raises(ValueError):
        list(iter_chunks(b"x", 0))


def test_chunk_size_respects_broker_and_protocol_limits() -> None:
    assert chunk_size(None) == DEFAULT_CHUNK_BYTES
    assert chunk_size(1024) == 1024
    assert chunk_size(10 * MAX_CHUNK_BYTES, preferred=10 * MAX_CHUNK_BYTES) == MAX_CHUNK_BYTES
    assert chunk_size(0) == DEFAULT_CHUNK_BYTES
    # As protocol::limits::chunk_for_payload: the server's max payload less the envelope's room.
    assert chunk_for_payload(None) == chunk_for_payload(1024 * 1024) == DEFAULT_CHUNK_BYTES
    assert chunk_for_payload(8 * 1024 * 1024) == MAX_CHUNK_BYTES
    assert chunk_for_payload(1) == 4096


def test_sha256_is_lower_hex() -> None:
    assert sha256_hex(b"helium") == hashlib.sha256(b"helium").hexdigest()
    assert sha256_hex(b"x") == sha256_hex(b"x").lower()


def test_requests_carry_the_version_and_encode_as_named_maps() -> None:
    body = request_body({"job_id": "j1", "data": b"\x00\x01"})
    raw = encode(body)
    assert raw[0] == 0x83  # fixmap of 3, like rmp_serde::to_vec_named
    assert msgpack.unpackb(raw, raw=False) == {"v": 1, "job_id": "j1", "data": b"\x00\x01"}
    # bytes travel as bin (serde_bytes), strings as str
    assert b"\xc4\x02\x00\x01" in raw


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("bad_request", errors.BadRequest),
        ("unsupported_version", errors.UnsupportedVersion),
        ("unauthorized", errors.Unauthorized),
        ("not_found", errors.NotFound),
        ("too_large", errors.TooLarge),
        ("conflict", errors.Conflict),
        ("insufficient_funds", errors.InsufficientFunds),
        ("invalid_model", errors.InvalidModel),
        ("invalid_data", errors.InvalidData),
        ("digest_mismatch", errors.DigestMismatch),
        ("quota_exceeded", errors.QuotaExceeded),
        ("unavailable", errors.Unavailable),
        ("internal", errors.Internal),
    ],
)
def test_every_wire_error_code_maps_to_its_exception(code: str, cls: type[errors.HeliumError]) -> None:
    payload = encode({"v": 1, "error": {"code": code, "message": f"because {code}"}})
    with pytest.raises(cls) as info:
        unwrap_reply(payload)
    assert type(info.value) is cls
    assert info.value.code == code
    assert str(info.value) == f"because {code}"
    assert isinstance(info.value, errors.HeliumError)


def test_input_errors_share_one_family() -> None:
    assert issubclass(errors.InvalidModel, errors.BadRequest)
    assert issubclass(errors.InvalidData, errors.BadRequest)
    assert issubclass(errors.WaitTimeout, TimeoutError)
    unknown = errors.error_from_wire("rate_limited", "slow down")
    assert type(unknown) is errors.HeliumError and unknown.code == "rate_limited"


def test_replies_that_are_not_envelopes_are_protocol_errors() -> None:
    with pytest.raises(errors.ProtocolError):
        unwrap_reply(b"\xc1garbage")
    with pytest.raises(errors.ProtocolError):
        unwrap_reply(encode({"v": 1}))
    with pytest.raises(errors.ProtocolError):
        decode(msgpack.packb([1, 2]))
    with pytest.raises(errors.UnsupportedVersion):
        unwrap_reply(encode({"v": 2, "ok": {}}))
    assert unwrap_reply(encode({"v": 1, "ok": None})) is None


def test_i128_arrives_as_sixteen_big_endian_bytes() -> None:
    # rmp_serde encodes Balance.micro (i128) as bin(16).
    for value in (0, 1, -1, 123_456_789_000, -(2**100)):
        assert wire_int(value.to_bytes(16, "big", signed=True)) == value
    assert Balance.from_wire({"principal": "a", "micro": (5_000_000).to_bytes(16, "big")}).micro == 5_000_000
    assert Balance.from_wire({"principal": "a", "micro": 7}).micro == 7
    with pytest.raises(errors.ProtocolError):
        wire_int(b"\x00\x01")


def test_job_view_to_status() -> None:
    view = {
        "job_id": "j1",
        "principal": "alice",
        "name": None,
        "state": "completed",
        "reason": None,
        "worker": "w1",
        "price": 250,
        "paid": 250,
        "epochs": 3,
        "epochs_done": 3,
        "last_loss": 0.25,
        "result": {"name": "result", "size": 10, "sha256": "ab" * 32},
        "created_ms": 1_000,
        "updated_ms": 2_000,
    }
    s = JobStatus.from_wire(view)
    assert s.state is JobState.COMPLETED and s.is_terminal
    assert s.price == pytest.approx(0.00025) and s.paid_micro == 250
    assert s.result is not None and s.result.size == 10
    minimal = JobStatus.from_wire(
        {"job_id": "j2", "principal": "a", "state": "queued", "epochs": 1, "created_ms": 0, "updated_ms": 0}
    )
    assert minimal.worker is None and minimal.paid == 0 and not minimal.is_terminal
    with pytest.raises(errors.ProtocolError):
        JobStatus.from_wire({"job_id": "j", "principal": "a", "state": "dreaming", "epochs": 1})


def test_worker_view_to_info() -> None:
    w = WorkerInfo.from_wire(
        {
            "worker_id": "w1",
            "owner": "bob",
            "device": "cpu",
            "device_name": "x86",
            "memory_bytes": 2**31,
            "price_per_hour": 1_500_000,
            "throughput": 1e9,
            "busy_with": None,
            "alive": True,
        }
    )
    assert w.price_per_hour == 1.5 and w.memory_gb == 2.0 and w.busy_with is None


def test_events_parse_by_kind() -> None:
    base = {"v": 1, "job_id": "j", "at_ms": 5}
    st = parse_event({**base, "kind": "state", "state": "queued", "reason": "no worker with ≥ 16 GiB"})
    assert isinstance(st, StateChanged) and st.state is JobState.QUEUED and "16 GiB" in (st.reason or "")
    aw = parse_event({**base, "kind": "awarded", "worker": "w1", "bids": 2, "price": 3, "eta_secs": 1.5})
    assert isinstance(aw, Awarded) and aw.worker == "w1" and aw.price_micro == 3
    pr = parse_event({**base, "kind": "progress", "epoch": 2, "epochs": 5, "loss": 0.5, "samples_per_sec": 1e3})
    assert isinstance(pr, Progress) and (pr.epoch, pr.epochs, pr.loss) == (2, 5, 0.5)
    other = parse_event({**base, "kind": "log", "line": "hello"})
    assert type(other) is JobEvent and other.raw["line"] == "hello"


def test_public_api_is_explicit() -> None:
    for name in helium_grid.__all__:
        assert hasattr(helium_grid, name), name
    assert helium_grid.Grid.__doc__ and "Example" in helium_grid.Grid.__doc__


def test_checkpoint_every_says_what_it_counts() -> None:
    import datetime as dt

    from helium_grid._submission import checkpoint_policy

    assert checkpoint_policy(None) is None
    assert checkpoint_policy(500) == {"steps": 500}
    assert checkpoint_policy("500 steps") == checkpoint_policy("500steps") == {"steps": 500}
    assert checkpoint_policy("30s") == checkpoint_policy(dt.timedelta(seconds=30)) == {"secs": 30.0}
    assert checkpoint_policy("2 min") == {"secs": 120.0}
    assert checkpoint_policy("1h") == {"secs": 3600.0}
    for bad, words in [
        (30.0, "ambiguous"),
        (0, "at least 1 step"),
        ("0.5s", "at least 1 second"),
        ("soon", "not understood"),
        ("1.5 steps", "whole numbers"),
        (True, "steps or a duration"),
        (dt.timedelta(0), "at least 1 second"),
    ]:
        with pytest.raises(errors.BadRequest, match=words):
            checkpoint_policy(bad)  # type: ignore[arg-type]
