"""The MessagePack codec and the reply envelope (``protocol/src/envelope.rs``).

Every message is a map with named fields and ``v`` = :data:`PROTOCOL_VERSION`. Every reply is
``{v, ok}`` or ``{v, error: {code, message}}``; :func:`unwrap_reply` turns the second into the
mapped :class:`~helium_grid.errors.HeliumError`.

Example::

    >>> unwrap_reply(encode({"v": 1, "ok": {"received": 3}}))
    {'received': 3}
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from .errors import ProtocolError, UnsupportedVersion, error_from_wire

__all__ = ["PROTOCOL_VERSION", "encode", "decode", "request_body", "unwrap_reply", "wire_int"]

#: Carried as ``v`` in every message.
PROTOCOL_VERSION = 1


def encode(message: dict[str, Any]) -> bytes:
    """A message as a MessagePack map (``bytes`` become ``bin``, ``str`` become ``str``).

    Example::

        >>> encode({"v": 1})
        b'\\x81\\xa1v\\x01'
    """
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(payload: bytes) -> dict[str, Any]:
    """A MessagePack map from the network; anything else is a :class:`ProtocolError`.

    Example::

        >>> decode(b'\\x81\\xa1v\\x01')
        {'v': 1}
    """
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"reply is not MessagePack: {e}") from e
    if not isinstance(value, dict):
        raise ProtocolError(f"reply is not a MessagePack map but {type(value).__name__}")
    return value


def request_body(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the protocol version added, as every request carries it.

    Example::

        >>> request_body({"job_id": "j1"})
        {'v': 1, 'job_id': 'j1'}
    """
    return {"v": PROTOCOL_VERSION, **fields}


def unwrap_reply(payload: bytes) -> Any:
    """The ``ok`` body of a reply, or raise the exception mapped from its ``error``.

    Example::

        >>> unwrap_reply(encode({"v": 1, "error": {"code": "not_found", "message": "no job j9"}}))
        Traceback (most recent call last):
        ...
        helium_grid.errors.NotFound: no job j9
    """
    reply = decode(payload)
    error = reply.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ProtocolError(f"reply error is not a map: {error!r}")
        raise error_from_wire(str(error.get("code", "")), str(error.get("message", "")))
    version = reply.get("v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"the broker replied with protocol version {version!r}; this client speaks {PROTOCOL_VERSION}"
        )
    if "ok" not in reply:
        raise ProtocolError("reply has neither ok nor error")
    return reply["ok"]


def wire_int(value: Any) -> int:
    """An integer field that Rust may have sent as an i128.

    ``rmp_serde`` encodes ``i128``/``u128`` as 16 big-endian bytes (``bin``), every narrower
    integer as a MessagePack int; this accepts both.

    Example::

        >>> wire_int((-5).to_bytes(16, "big", signed=True)), wire_int(7)
        (-5, 7)
    """
    if isinstance(value, bool):
        raise ProtocolError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return int.from_bytes(value, "big", signed=True)
    raise ProtocolError(f"expected an integer, got {value!r}")
