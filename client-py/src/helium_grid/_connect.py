"""Opening the NATS connection of a grid client: the principal from the credential, its inbox
prefix, TLS to a private CA, and nats-server's refusals turned into :class:`Unauthorized`.

``url`` may name several servers of a cluster, separated by commas (the form every Helium
binary takes, ``helium_protocol::servers``): the client connects to one of them and reconnects
to another when it goes away.

Example::

    nc, principal, refusals = await connect_nats(url, creds="alice.creds")  # doctest: +SKIP
    servers = server_list("nats://127.0.0.1:4222, nats://127.0.0.1:4223")  # two servers
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from . import _subjects as subjects
from ._creds import CREDS_ENV, CredentialError, find_creds, principal_of
from .errors import BadRequest, Unauthorized, Unavailable

__all__ = ["TLS_CA_ENV", "Refusals", "connect_nats", "check_principal", "server_list"]

log = logging.getLogger("helium_grid")
T = TypeVar("T")

#: The environment variable naming a CA certificate to trust for the grid's TLS.
TLS_CA_ENV = "HELIUM_TLS_CA"


def server_list(url: str) -> list[str]:
    """The servers of a comma-separated list, in order; :class:`BadRequest` for an empty one or
    a stray comma (as the Rust binaries refuse them).

        >>> server_list("nats://a:4222, nats://b:4222")
        ['nats://a:4222', 'nats://b:4222']
    """
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"no NATS server given (expected nats://host:port, or several separated by commas): {url!r}")
    servers = [s.strip() for s in url.split(",")]
    for i, server in enumerate(servers, 1):
        if not server:
            raise BadRequest(f"server {i} of {url!r} is empty (a stray comma?)")
    return servers


def check_principal(principal: str) -> str:
    if not isinstance(principal, str) or not subjects.valid_id(principal):
        raise BadRequest(f"principal must be 1-64 characters of [A-Za-z0-9_-], not {principal!r}")
    return principal


class Refusals:
    """Turns nats-server's asynchronous "permissions violation" errors into a prompt
    :class:`Unauthorized` for the request that caused it, instead of a timeout."""

    _PREFIX = "permissions violation for publish to "

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def refused(self, error: str) -> bool:
        """Handles one of nats-py's error callbacks; whether it was a refusal."""
        text = error.lower()
        at = text.find(self._PREFIX)
        if at < 0:
            return False
        subject = text[at + len(self._PREFIX) :].strip().strip("'\"")
        log.warning("the grid refused a publish to %s", subject)
        for fut in self._waiting.pop(subject, []):
            if not fut.done():
                fut.set_exception(
                    Unauthorized(f"this credential may not publish to {subject} (nats-server refused it)")
                )
        return True

    async def guard(self, subject: str, request: Coroutine[Any, Any, T]) -> T:
        """``request``, or :class:`Unauthorized` as soon as the server refuses ``subject``."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = subject.lower()
        self._waiting.setdefault(key, []).append(fut)
        task = asyncio.ensure_future(request)
        try:
            await asyncio.wait({task, fut}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            fut.result()  # raises Unauthorized
            raise AssertionError("unreachable")
        finally:
            waiting = self._waiting.get(key)
            if waiting and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._waiting[key]
            if not task.done():
                task.cancel()



async def connect_nats(
    url: str,
    *,
    creds: str | os.PathLike[str] | None,
    principal: str | None,
    tls_ca: str | os.PathLike[str] | None,
    connect_timeout: float,
    **nats_options: Any,
) -> tuple[NatsClient, str, Refusals]:
    """The connection, the principal it acts as, and its refusal tracker; see
    :meth:`helium_grid.AsyncGrid.connect`."""
    path = find_creds(creds)
    if path is not None:
        who = principal_of(path)
        if principal is not None and principal != who.name:
            raise CredentialError(f"{path} is {who.role} {who.name}'s credential, not {principal}'s")
        principal = who.name
        nats_options.setdefault("user_credentials", str(path))
        nats_options.setdefault("inbox_prefix", who.inbox_prefix)
    elif principal is None:
        raise CredentialError(
            f"no credential: pass creds='<principal>.creds' or set ${CREDS_ENV} "
            "(the grid's operator issues one with `helium creds issue researcher <name>`)"
        )
    check_principal(principal)
    ca = tls_ca if tls_ca is not None else os.environ.get(TLS_CA_ENV) or None
    if ca is not None and "tls" not in nats_options:
        try:
            nats_options["tls"] = ssl.create_default_context(cafile=os.fspath(ca))
        except (OSError, ssl.SSLError) as e:
            raise Unavailable(f"cannot read the CA certificate {ca}: {e}") from e
    refusals = Refusals()
    denied: list[str] = []  # nats-py retries after an auth error, then reports only "no servers"

    async def on_error(e: Exception) -> None:
        if "authorization violation" in str(e).lower():
            denied.append(str(e))
        elif not refusals.refused(str(e)):
            log.debug("nats: %s", e)

    # The first connection gives up after a couple of tries per server (a wrong URL fails in
    # seconds); once connected, the client reconnects forever, as a notebook may run for hours.
    # The first attempt does not reconnect at all: nats-py retries a failed TLS handshake
    # (an untrusted certificate) forever otherwise.
    options: dict[str, Any] = {
        "name": f"helium-grid-py:{principal}",
        "connect_timeout": connect_timeout,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "error_cb": on_error,
    }
    options.update(nats_options)
    # Without reconnects nats-py tries only the first server of its pool, so each server of a
    # cluster's list gets its turn first (in random order, as NATS clients spread their load,
    # unless ``dont_randomize``); the whole list stays the pool to reconnect to.
    servers = server_list(url)
    if not options.get("dont_randomize"):
        random.shuffle(servers)
    options["dont_randomize"] = True
    for turn in range(len(servers)):
        try:
            nc = await nats.connect(servers[turn:] + servers[:turn], **options)
            break
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as e:
            if denied or "authorization violation" in str(e).lower():
                held = f"the credential {path}" if path else "no credential"
                raise Unauthorized(
                    f"the grid at {url} refused the connection with {held} (revoked, expired, or another grid's?)"
                ) from e
            if turn + 1 < len(servers):
                log.info("cannot connect to %s (%s); trying the next server", servers[turn], e or type(e).__name__)
                continue
            raise Unavailable(f"cannot connect to NATS at {url}: {e or type(e).__name__}") from e
    if "max_reconnect_attempts" not in nats_options:
        nc.options["max_reconnect_attempts"] = -1  # read by nats-py at each reconnect
    if "allow_reconnect" not in nats_options:
        nc.options["allow_reconnect"] = True  # read by nats-py when the connection drops
    return nc, principal, refusals
