"""Chunked, SHA-256-checked artifact transfer over NATS (``protocol/src/artifacts.rs``).

Upload: ``artifact.begin`` → ``artifact.chunk``* → ``artifact.commit``, one chunk in flight at a
time (the broker requires ``offset`` = bytes received so far, and memory stays bounded by one
chunk). Download: ``artifact.read`` chunk by chunk, hashing as the bytes arrive, then checking
size and digest against what the job record declared.

Example::

    info = await upload(request, "model", model_bytes)
    blob = await download(request, job_id, "result", expected=status.result)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ._limits import DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES
from ._subjects import ARTIFACT_BEGIN, ARTIFACT_CHUNK, ARTIFACT_COMMIT, ARTIFACT_READ
from ._wire import wire_int
from .errors import DigestMismatch, ProtocolError, TooLarge
from .records import ArtifactInfo

__all__ = ["Request", "sha256_hex", "iter_chunks", "chunk_size", "upload", "download"]

#: ``await request(verb, fields)`` → the reply's ``ok`` body (raises the mapped error).
Request = Callable[[str, dict[str, Any]], Awaitable[Any]]


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """Lower-case hex SHA-256, as the wire declares digests.

    Example::

        >>> sha256_hex(b"")[:16]
        'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def chunk_size(max_chunk: int | None, preferred: int = DEFAULT_CHUNK_BYTES) -> int:
    """The chunk size to use: ours, lowered to what the broker accepts, never above the
    protocol's :data:`MAX_CHUNK_BYTES`.

    Example::

        >>> chunk_size(64 * 1024), chunk_size(None)
        (65536, 262144)
    """
    size = min(preferred, MAX_CHUNK_BYTES)
    if max_chunk is not None and max_chunk > 0:
        size = min(size, max_chunk)
    return max(1, size)


def iter_chunks(data: bytes, size: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, chunk)`` pairs covering ``data`` in order; one empty chunk for empty data is
    not sent (commit alone finishes an empty upload).

    Example::

        >>> list(iter_chunks(b"abcde", 2))
        [(0, b'ab'), (2, b'cd'), (4, b'e')]
    """
    if size <= 0:
        raise ValueError("chunk size must be positive")
    view = memoryview(data)
    for offset in range(0, len(data), size):
        yield offset, bytes(view[offset : offset + size])


async def upload(
    request: Request,
    name: str,
    data: bytes,
    *,
    job_id: str | None = None,
    preferred_chunk: int = DEFAULT_CHUNK_BYTES,
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

    for offset, chunk in iter_chunks(data, size):
        ack = await request(ARTIFACT_CHUNK, {"upload_id": upload_id, "offset": offset, "data": chunk})
        received = wire_int(ack.get("received")) if isinstance(ack, dict) else None
        if received != offset + len(chunk):
            raise ProtocolError(
                f"artifact.chunk: broker acknowledged {received} bytes of {name!r}, expected {offset + len(chunk)}"
            )
        if on_chunk is not None:
            on_chunk(received)

    info = ArtifactInfo.from_wire(await request(ARTIFACT_COMMIT, {"upload_id": upload_id}))
    if info.sha256 != digest or info.size != len(data):
        raise DigestMismatch(
            f"broker stored {name!r} as {info.size} bytes sha256 {info.sha256}, sent {len(data)} bytes sha256 {digest}"
        )
    return upload_id, info


async def download(
    request: Request,
    job_id: str,
    name: str,
    *,
    expected: ArtifactInfo | None = None,
    preferred_chunk: int = DEFAULT_CHUNK_BYTES,
    max_bytes: int | None = None,
) -> bytes:
    """Download a job's artifact chunk by chunk and verify its SHA-256 (against ``expected``
    when given, and against what every chunk reply declares).

    Example::

        blob = await download(grid._request, "j1", "result", expected=status.result)
    """
    size_per_read = chunk_size(None, preferred_chunk)
    hasher = hashlib.sha256()
    parts: list[bytes] = []
    offset = 0
    total: int | None = None
    declared: str | None = None
    while total is None or offset < total:
        reply = await request(ARTIFACT_READ, {"job_id": job_id, "name": name, "offset": offset, "len": size_per_read})
        try:
            chunk = bytes(reply["data"])
            at = wire_int(reply["offset"])
            size = wire_int(reply["size"])
            sha = str(reply["sha256"])
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"artifact.read reply is malformed: {e}") from e
        if at != offset:
            raise ProtocolError(f"artifact.read returned offset {at}, asked for {offset}")
        if total is None:
            total, declared = size, sha
            if max_bytes is not None and total > max_bytes:
                raise TooLarge(f"artifact {name!r} of job {job_id} is {total} bytes, over {max_bytes}")
        elif (size, sha) != (total, declared):
            raise DigestMismatch(f"artifact {name!r} of job {job_id} changed during the download")
        if not chunk and offset < total:
            raise ProtocolError(f"artifact.read returned no bytes at offset {offset} of {total}")
        hasher.update(chunk)
        parts.append(chunk)
        offset += len(chunk)
    if offset != total:
        raise DigestMismatch(f"artifact {name!r}: received {offset} bytes, declared {total}")
    digest = hasher.hexdigest()
    if digest != declared:
        raise DigestMismatch(f"artifact {name!r} of job {job_id}: sha256 {digest}, broker declared {declared}")
    if expected is not None and (digest != expected.sha256 or offset != expected.size):
        raise DigestMismatch(
            f"artifact {name!r} of job {job_id}: got {offset} bytes sha256 {digest}, "
            f"the job record says {expected.size} bytes sha256 {expected.sha256}"
        )
    return b"".join(parts)
