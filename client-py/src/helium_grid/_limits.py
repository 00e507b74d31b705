"""Sizes and units both sides agree on (``protocol/src/limits.rs``), and the conversions from the
researcher's units (credits, seconds, datetimes) to the wire's (integer micro-credits, unix ms).

Example::

    >>> credits_to_micro(1.5)
    1500000
    >>> micro_to_credits(250)
    0.00025
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from .errors import BadRequest

__all__ = [
    "MAX_CHUNK_BYTES",
    "CHUNK_HEADROOM_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "TRANSFER_WINDOW",
    "DEFAULT_MAX_ARTIFACT_BYTES",
    "MICRO_PER_CREDIT",
    "credits_to_micro",
    "micro_to_credits",
    "deadline_to_ms",
]

#: Largest data field of one artifact chunk, upload or download.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
#: Room a chunk leaves in a message for its envelope: a chunk is the server's max payload less this.
CHUNK_HEADROOM_BYTES = 64 * 1024
#: Chunk size for a server with nats-server's default max payload (1 MiB).
DEFAULT_CHUNK_BYTES = 1024 * 1024 - CHUNK_HEADROOM_BYTES
#: Chunk requests kept in flight by a transfer.
TRANSFER_WINDOW = 4
#: Default largest artifact the broker accepts (the broker's ``--max-artifact-bytes``).
DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024 * 1024 * 1024
#: Micro-credits in one credit: all amounts on the wire and in the ledger are integers.
MICRO_PER_CREDIT = 1_000_000

_U64_MAX = 2**64 - 1


def credits_to_micro(credits: float | int | str | Decimal, *, what: str = "amount") -> int:
    """Credits (any non-negative real) → integer micro-credits, rounded half-even.

    Goes through ``Decimal(str(x))`` so ``0.1`` credits is exactly 100 000 micro-credits.

    Example::

        >>> credits_to_micro("0.000001"), credits_to_micro(0.1)
        (1, 100000)
    """
    if isinstance(credits, bool):
        raise BadRequest(f"{what} must be a number of credits, not {credits!r}")
    try:
        value = credits if isinstance(credits, Decimal) else Decimal(str(credits))
    except (InvalidOperation, ValueError) as e:
        raise BadRequest(f"{what} must be a number of credits, not {credits!r}") from e
    if not value.is_finite():
        raise BadRequest(f"{what} must be finite, not {credits!r}")
    if value < 0:
        raise BadRequest(f"{what} must not be negative (got {credits!r} credits)")
    micro = int((value * MICRO_PER_CREDIT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if micro > _U64_MAX:
        raise BadRequest(f"{what} of {credits!r} credits is too large")
    return micro


def micro_to_credits(micro: int) -> float:
    """Integer micro-credits → credits, for display.

    Example::

        >>> micro_to_credits(1_500_000)
        1.5
    """
    return micro / MICRO_PER_CREDIT


def deadline_to_ms(deadline: float | int | _dt.datetime | None, *, now: float | None = None) -> int:
    """A deadline as seconds from now, or as a ``datetime`` → unix milliseconds; ``None`` → 0
    (no deadline). Naive datetimes are local time.

    Example::

        >>> deadline_to_ms(None)
        0
        >>> deadline_to_ms(60, now=1000.0)
        1060000
    """
    if deadline is None:
        return 0
    now_s = time.time() if now is None else now
    if isinstance(deadline, _dt.datetime):
        at = deadline.timestamp()
        if at <= now_s:
            raise BadRequest(f"deadline {deadline.isoformat()} is in the past")
        return int(at * 1000)
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise BadRequest(f"deadline must be seconds from now or a datetime, not {deadline!r}")
    if not math.isfinite(deadline) or deadline <= 0:
        raise BadRequest(f"deadline must be a positive number of seconds from now, not {deadline!r}")
    return int((now_s + deadline) * 1000)
