"""Following a job's events: the broker makes a JetStream consumer of the caller's own events
of one job (``job.follow``) delivering into this connection's own inbox; this reads it.

Researchers hold no JetStream API rights (a consumer they created could deliver anywhere, the
ledger journal included), so the consumer is the broker's; it behaves as an ordered consumer:
no acks, flow control answered here, heartbeats, and a fresh consumer from the next stream
sequence after any gap.

Example::

    follower = Follower(grid, job_id)           # doctest: +SKIP
    pending = await follower.start()            # doctest: +SKIP
    msg = await follower.next(timeout=5)        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from . import _subjects as subjects

log = logging.getLogger("helium_grid")

__all__ = ["Follower"]


class Follower:
    """One job's events, in stream order, each once."""

    def __init__(self, grid: Any, job_id: str) -> None:
        self._grid = grid
        self._job_id = job_id
        self._sub: Any = None
        self._expected = 1  # the consumer sequence of the next delivery
        self.last_seq = 0  # the stream sequence of the last event returned

    async def start(self) -> int:
        """(Re)creates the consumer from the event after :attr:`last_seq`; how many it holds."""
        await self.close()
        nc = self._grid._nc
        inbox = nc.new_inbox()
        self._sub = await nc.subscribe(inbox)
        reply = await self._grid._read(
            subjects.JOB_FOLLOW,
            {"job_id": self._job_id, "deliver": inbox, "start_seq": self.last_seq + 1 if self.last_seq else 0},
        )
        self._expected = 1
        pending = reply.get("pending") if isinstance(reply, dict) else None
        return pending if isinstance(pending, int) else 0

    async def next(self, timeout: float) -> tuple[Msg, int] | None:
        """The next event and how many follow it now, or ``None`` after ``timeout`` seconds of
        silence."""
        while True:
            try:
                msg = await self._sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                return None
            headers = msg.headers or {}
            if headers.get("Status") == "100":
                # Flow control asks for an answer; a stalled consumer names where to send it.
                answer_to = msg.reply or headers.get("Nats-Consumer-Stalled")
                if answer_to:
                    await self._grid._nc.publish(answer_to, b"")
                continue
            try:
                meta = msg.metadata
            except Exception as e:  # not a JetStream delivery: nothing the broker's consumer sends
                log.warning("skipping a non-JetStream message on the events inbox of %s: %s", self._job_id, e)
                continue
            if meta.sequence.consumer != self._expected:
                log.debug("event gap on %s (got %s, wanted %s); resuming", self._job_id, meta.sequence.consumer, self._expected)
                await self.start()
                continue
            self._expected += 1
            self.last_seq = meta.sequence.stream
            return msg, meta.num_pending

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as e:  # closing connection, already gone
                log.debug("unsubscribe from the events of %s: %s", self._job_id, e)
            self._sub = None
