"""Chunked, SHA-256-checked artifact transfer over NATS (``protocol/src/artifacts.rs``).

Upload: ``artifact.begin`` → ``artifact.chunk``* → ``artifact.commit``, with
:data:`TRANSFER_WINDOW` chunks in flight, sent in offset order (the broker writes them in
order and holds the few that overtake one another). Download: ``artifact.read`` with the same
window of reads ahead, hashing in order as the bytes arrive, then checking size and digest
against what the job record declared. A chunk is as large as the server's max payload allows.

Example::

    info = await upload(request, "model", model_bytes)
    blob = await download(request, job_id, "result", expected=status.result)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ._limits import CHUNK_HEADROOM_BYTES, DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, TRANSFER_WINDOW
from ._subjects import ARTIFACT_BEGIN, ARTIFACT_CHUNK, ARTIFACT_COMMIT, ARTIFACT_READ
from ._wire import wire_int
from .errors import DigestMismatch, ProtocolError, TooLarge
from .records import ArtifactInfo

__all__ = ["Request", "sha256_hex", "iter_chunks", "chunk_size", "chunk_for_payload", "upload", "download"]

#: ``await request(verb, fields)`` → the reply's ``ok`` body (raises the mapped error).
Request = Callable[[str, dict[str, Any]], Awaitable[Any]]


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex SHA-256, as the wire declares digests.

    Example::

        >>> sha256_hex(b"")[:16]
        'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def chunk_for_payload(max_payload: int | None) -> int:
    """The chunk a server taking messages of ``max_payload`` bytes carries (``None``: the
    nats-server default of 1 MiB), as ``protocol::limits::chunk_for_payload`` computes it.

    Example::

        >>> chunk_for_payload(8 * 1024 * 1024) == MAX_CHUNK_BYTES, chunk_for_payload(None) == DEFAULT_CHUNK_BYTES
        (True, True)
    """
    if not max_payload:
        return DEFAULT_CHUNK_BYTES
    return max(4096, min(MAX_CHUNK_BYTES, max_payload - CHUNK_HEADROOM_BYTES))


def chunk_size(max_chunk: int | None, preferred: int = DEFAULT_CHUNK_BYTES) -> int:
    """The chunk size to use: ours, lowered to what the broker accepts, never above the
    protocol's :data:`MAX_CHUNK_BYTES`.

    Example::

        >>> chunk_size(64 * 1024), chunk_size(None) == DEFAULT_CHUNK_BYTES
        (65536, True)
    """
    size = min(preferred, MAX_CHUNK_BYTES)
    if max_chunk is not None and max_chunk > 0:
        size = min(size, max_chunk)
    return max(1, size)


def iter_chunks(data: bytes, size: int) -> Iterator[tuple[int, memoryview]]:
    """``(offset, chunk)`` pairs covering ``data`` in order; one empty chunk for empty data is
    not sent (commit alone finishes an empty upload).

    Example::

        >>> [(o, bytes(c)) for o, c in iter_chunks(b"abcde", 2)]
        [(0, b'ab'), (2, b'cd'), (4, b'e')]
    """
    if size <= 0:
        raise ValueError("chunk size must be positive")
    view = memoryview(data)
    for offset in range(0, len(data), size):
        yield offset, view[offset : offset + size]


async def upload(
    request: Request,
    name: str,
    data: bytes,
    *,
    job_id: str | None = None,
    preferred_chunk: int = MAX_CHUNK_BYTES,
    window: int = TRANSFER_WINDOW,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[str, ArtifactInfo]:
    """Upload ``data`` as artifact ``name`` (to staging when ``job_id`` is ``None``); returns the
    upload id and the broker's :class:`ArtifactInfo`. ``on_chunk(bytes_sent)`` reports progress.

    Example::

        upload_id, info = await upload(grid._request, "model", model_bytes)
    """
    digest = sha256_hex(data)
    begin: dict[str, Any] = {"name": name, "size": len(data), "sha256": digest}
    if job_id is not None:
        begin["job_id"] = job_id
    started = await request(ARTIFACT_BEGIN, begin)
    try:
        upload_id = str(started["upload_id"])
        size = chunk_size(wire_int(started.get("max_chunk") or 0) or None, preferred_chunk)
    except (KeyError, TypeError) as e:
        raise ProtocolError(f"artifact.begin reply lacks upload_id: {started!r}") from e

    async def send(offset: int, chunk: memoryview) -> int:
        ack = await request(ARTIFACT_CHUNK, {"upload_id": upload_id, "offset": offset, "data": chunk})
        received = wire_int(ack.get("received")) if isinstance(ack, dict) else None
        # Chunks that overtook an earlier one are held, so the count may lag this chunk's end.
        if received is None or not 0 <= received <= len(data):
            raise ProtocolError(f"artifact.chunk: broker acknowledged {received!r} bytes of {name!r}")
        return offset + len(chunk)

    await _windowed((send(offset, chunk) for offset, chunk in iter_chunks(data, size)), window, on_chunk)
    info = ArtifactInfo.from_wire(await request(ARTIFACT_COMMIT, {"upload_id": upload_id}))
    if info.sha256 != digest or info.size != len(data):
        raise DigestMismatch(
            f"broker stored {name!r} as {info.size} bytes sha256 {info.sha256}, sent {len(data)} bytes sha256 {digest}"
        )
    return upload_id, info


async def _windowed(
    steps: Iterator[Awaitable[Any]], window: int, on_done: Callable[[Any], None] | None = None
) -> None:
    """Runs ``steps`` with at most ``window`` in flight, starting them in order and handing
    each result to ``on_done`` in order; the first failure cancels the rest and is raised."""
    inflight: deque[asyncio.Future[Any]] = deque()
    try:
        for step in steps:
            if len(inflight) >= max(1, window):
                result = await inflight.popleft()
                if on_done is not None:
                    on_done(result)
            inflight.append(asyncio.ensure_future(step))
        while inflight:
            result = await inflight.popleft()
            if on_done is not None:
                on_done(result)
    finally:
        for f in inflight:
            f.cancel()


async def download(
    request: Request,
    job_id: str,
    name: str,
    *,
    expected: ArtifactInfo | None = None,
    preferred_chunk: int = DEFAULT_CHUNK_BYTES,
    window: int = TRANSFER_WINDOW,
    max_bytes: int | None = None,
) -> bytes:
    """Download a job's artifact with a window of chunk reads in flight and verify its
    SHA-256 (against ``expected`` when given, and against what every chunk reply declares).
    ``preferred_chunk`` must fit the server's max payload (see :func:`chunk_for_payload`).

    Example::

        blob = await download(grid._request, "j1", "result", expected=status.result)
    """
    step = max(1, min(preferred_chunk, MAX_CHUNK_BYTES))

    async def read(offset: int, length: int) -> tuple[bytes, int, str]:
        reply = await request(ARTIFACT_READ, {"job_id": job_id, "name": name, "offset": offset, "len": length})
        try:
            chunk = bytes(reply["data"])
            at = wire_int(reply["offset"])
            size = wire_int(reply["size"])
            sha = str(reply["sha256"])
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"artifact.read reply is malformed: {e}") from e
        if at != offset:
            raise ProtocolError(f"artifact.read returned offset {at}, asked for {offset}")
        if len(chunk) != max(0, min(length, size - offset)):
            raise ProtocolError(f"artifact.read returned {len(chunk)} bytes at {offset}, asked for {length} of {size}")
        return chunk, size, sha

    # The first read tells the size (and digest) when the job record did not.
    first, total, declared = await read(0, step)
    if max_bytes is not None and total > max_bytes:
        raise TooLarge(f"artifact {name!r} of job {job_id} is {total} bytes, over {max_bytes}")
    if expected is not None and (total, declared) != (expected.size, expected.sha256):
        raise DigestMismatch(
            f"artifact {name!r} of job {job_id}: the broker declares {total} bytes sha256 {declared}, "
            f"the job record says {expected.size} bytes sha256 {expected.sha256}"
        )
    hasher = hashlib.sha256(first)
    parts: list[bytes] = [first]

    def take(got: tuple[bytes, int, str]) -> None:
        chunk, size, sha = got
        if (size, sha) != (total, declared):
            raise DigestMismatch(f"artifact {name!r} of job {job_id} changed during the download")
        hasher.update(chunk)
        parts.append(chunk)

    reads = (read(offset, min(step, total - offset)) for offset in range(len(first), total, step))
    await _windowed(reads, window, take)
    received = sum(len(p) for p in parts)
    if received != total:
        raise DigestMismatch(f"artifact {name!r}: received {received} bytes, declared {total}")
    digest = hasher.hexdigest()
    if digest != declared:
        raise DigestMismatch(f"artifact {name!r} of job {job_id}: sha256 {digest}, broker declared {declared}")
    return b"".join(parts)
