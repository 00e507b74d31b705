"""The async core: :class:`AsyncGrid` (one NATS connection for one principal) and
:class:`AsyncJob`. The sync :class:`~helium_grid.Grid` runs this on a private event loop.

Every request goes to ``helium.v1.api.<principal>.<verb>`` as a MessagePack map with ``v``; the
reply envelope is unwrapped into the body or the mapped exception. Job events are read from the
JetStream stream ``HELIUM_EVENTS`` with an ordered consumer that delivers from the first message,
so a late or reconnecting client replays the history and then follows live.

Example::

    import asyncio
    from helium_grid import AsyncGrid

    async def main():
        async with await AsyncGrid.connect("nats://127.0.0.1:4222", principal="alice") as grid:
            job = await grid.submit(model, train=(x, y), epochs=10, batch_size=64,
                                    max_price=2.0, budget=1.0)
            await job.wait()
            trained = await job.result()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import io
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

import nats
import nats.errors
import torch
from nats.aio.client import Client as NatsClient

from . import _subjects as subjects
from ._artifacts import chunk_for_payload, download, upload
from ._burst import BurstTracker
from ._connect import Refusals, check_principal, connect_nats
from ._follow import Follower
from ._limits import credits_to_micro, micro_to_credits
from ._history import LiveCurve, checkpoint_epochs, history_frame, plot_history
from ._progress import Tracker, bar_label
from ._state import load_state
from ._statement import earnings_of, plot_statement, statement_frame
from ._submission import Submission, prepare_quote, prepare_submission, quiet_torchscript
from ._wire import decode, encode, request_body, unwrap_reply
from .errors import (
    BadRequest,
    Conflict,
    HeliumError,
    InsufficientFunds,
    InvalidModel,
    JobFailed,
    NotFound,
    ProtocolError,
    Unavailable,
    WaitTimeout,
)

from .records import (
    AuctionNote,
    Balance,
    Earnings,
    JobEvent,
    JobState,
    JobStatus,
    Quote,
    StateChanged,
    StatementLine,
    WorkerInfo,
    parse_event,
)

__all__ = ["AsyncGrid", "AsyncJob", "DEFAULT_URL", "DEFAULT_TIMEOUT", "DEFAULT_OUTAGE_TIMEOUT"]

log = logging.getLogger("helium_grid")

#: Where a local grid listens by default.
DEFAULT_URL = "nats://127.0.0.1:4222"
#: Seconds a request waits for the broker's reply.
DEFAULT_TIMEOUT = 30.0
#: Seconds a read rides out a broker that does not answer (a restart takes a few).
DEFAULT_OUTAGE_TIMEOUT = 120.0
#: While following a job, how long a silence lasts before the job record is polled.
_POLL_SECONDS = 5.0


def finish(status: JobStatus, *, raise_on_failure: bool) -> JobStatus:
    """The final status of ``wait``, raising :class:`JobFailed` for failed/expired jobs."""
    if raise_on_failure and status.state in (JobState.FAILED, JobState.EXPIRED):
        why = f": {status.reason}" if status.reason else ""
        raise JobFailed(f"job {status.job_id} {status.state.value}{why}", status=status)
    return status


def load_module(blob: bytes, map_location: str | torch.device | None = "cpu") -> torch.jit.ScriptModule:
    """TorchScript bytes → module (``torch.jit.load``; never pickle). Only ever called on
    the researcher's own model bytes."""
    with quiet_torchscript():
        module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
            io.BytesIO(blob), map_location=map_location
        )
    return module


def trained_module(
    model_bytes: bytes, result: bytes, map_location: str | torch.device | None = "cpu"
) -> torch.jit.ScriptModule:
    """The researcher's own module (``model_bytes``) with a result's tensors loaded into it."""
    try:
        module = load_module(model_bytes, map_location)
    except Exception as e:
        raise InvalidModel(f"the job's own model.pt does not load: {e}") from e
    return load_state(module, result)


class AsyncGrid:
    """A connection to a Helium grid as one principal, for asyncio code.

    Use :meth:`connect` to make one. Methods mirror :class:`helium_grid.Grid`.

    Example::

        grid = await AsyncGrid.connect("nats://127.0.0.1:4222", principal="alice")
        print(await grid.balance())
        await grid.close()
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        url: str,
        principal: str,
        timeout: float = DEFAULT_TIMEOUT,
        refusals: Refusals | None = None,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
    ) -> None:
        self._nc = nc
        self.url = url
        self.principal = check_principal(principal)
        self.timeout = timeout
        #: How long reads (status, follow, downloads, lists) ride out a broker that is not
        #: answering (restarting) before they raise :class:`Unavailable`.
        self.outage_timeout = outage_timeout
        #: Called with a message while a read waits for the broker to come back (the progress
        #: bar shows it), and with ``None`` once it answers again.
        self.on_outage: Callable[[str | None], None] | None = None
        self._refusals = refusals or Refusals()

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        creds: str | os.PathLike[str] | None = None,
        principal: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
        **nats_options: Any,
    ) -> AsyncGrid:
        """Connect to the grid's NATS server with the credential ``creds`` (a ``.creds`` file
        the grid's operator issued; default ``$HELIUM_CREDS``): the principal is the
        credential's. ``principal``, if given, must match it. ``tls_ca`` (default
        ``$HELIUM_TLS_CA``): a CA certificate (PEM) to trust for a ``tls://`` grid whose
        certificate a private CA signed (``deploy/tls.sh``). ``outage_timeout``: how long reads
        (status, wait, result) ride out a broker that is restarting. ``nats_options`` go to
        ``nats.connect``.

        Example::

            grid = await AsyncGrid.connect("nats://127.0.0.1:4222", creds="alice.creds")
        """
        nc, principal, refusals = await connect_nats(
            url, creds=creds, principal=principal, tls_ca=tls_ca, connect_timeout=connect_timeout, **nats_options
        )
        return cls(nc, url=url, principal=principal, timeout=timeout, refusals=refusals, outage_timeout=outage_timeout)

    async def close(self) -> None:
        """Close the connection (idempotent).

        Example::

            await grid.close()
        """
        if not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> AsyncGrid:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncGrid(url={self.url!r}, principal={self.principal!r})"

    # -- transport ------------------------------------------------------------------------

    @property
    def _chunk(self) -> int:
        """Artifact chunk size: what this connection's server lets a message carry."""
        return chunk_for_payload(self._nc.max_payload)

    async def _request(self, verb: str, fields: dict[str, Any], *, timeout: float | None = None) -> Any:
        """One request/reply on ``helium.v1.api.<principal>.<verb>``; the reply's ``ok`` body."""
        subject = subjects.api(self.principal, verb)
        try:
            msg = await self._refusals.guard(
                subject, self._nc.request(subject, encode(request_body(fields)), timeout=timeout or self.timeout)
            )
        except nats.errors.NoRespondersError as e:
            raise Unavailable(f"no broker is answering on {self.url} ({verb})") from e
        except (nats.errors.TimeoutError, asyncio.TimeoutError) as e:  # distinct types before 3.11
            raise Unavailable(
                f"no broker is answering on {self.url}: {verb} got no reply within {timeout or self.timeout:g}s"
            ) from e
        except nats.errors.ConnectionClosedError as e:
            raise Unavailable(f"the connection to {self.url} is closed") from e
        return unwrap_reply(msg.data)

    async def _read(self, verb: str, fields: dict[str, Any], *, timeout: float | None = None) -> Any:
        """A request that changes nothing (status, follow, list, balance, artifact reads): while
        the broker does not answer (it is restarting, or NATS is reconnecting) it is asked again,
        backing off to 2 s, for up to :attr:`outage_timeout`; then :class:`Unavailable`."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.outage_timeout
        delay = 0.1
        outage = False
        try:
            while True:
                try:
                    return await self._request(verb, fields, timeout=timeout)
                except Unavailable as e:
                    if self._nc.is_closed or loop.time() + delay > give_up:
                        raise
                    if not outage:
                        outage = True
                        log.warning("%s; retrying for up to %gs", e, self.outage_timeout)
                    if self.on_outage is not None:
                        self.on_outage(f"reconnecting to the broker ({e})")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            if outage and self.on_outage is not None:
                self.on_outage(None)

    # -- jobs -----------------------------------------------------------------------------

    async def submit(
        self,
        model: torch.nn.Module,
        *,
        train: tuple[torch.Tensor, torch.Tensor],
        epochs: int,
        batch_size: int,
        max_price: float,
        budget: float,
        loss: str | None = None,
        optimizer: str = "adam",
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        nesterov: bool | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        seed: int = 0,
        shuffle: bool = True,
        min_memory_gb: float = 0.0,
        device: str = "any",
        deadline: float | _dt.datetime | None = None,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        name: str | None = None,
        checkpoint_every: int | str | _dt.timedelta | None = None,
    ) -> AsyncJob:
        """Check, serialize, upload and submit a training job; see :meth:`helium_grid.Grid.submit`.

        Example::

            job = await grid.submit(model, train=(x, y), epochs=10, batch_size=64,
                                    max_price=2.0, budget=1.0)
        """
        prepared = await asyncio.to_thread(
            prepare_submission,
            model,
            train=train,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_price=max_price,
            budget=budget,
            loss=loss,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            betas=betas,
            eps=eps,
            seed=seed,
            shuffle=shuffle,
            min_memory_gb=min_memory_gb,
            device=device,
            deadline=deadline,
            validation=validation,
            name=name,
            checkpoint_every=checkpoint_every,
        )
        return await self.submit_prepared(prepared)

    async def submit_prepared(self, sub: Submission) -> AsyncJob:
        """Upload a :class:`Submission`'s model and data to staging and submit the job.

        Example::

            job = await grid.submit_prepared(prepare_submission(model, train=(x, y), ...))
        """
        model_upload, _ = await upload(self._request, "model", sub.model_bytes, preferred_chunk=self._chunk)
        data_upload, _ = await upload(self._request, "data", sub.data_bytes, preferred_chunk=self._chunk)
        view = await self._request(
            subjects.JOB_SUBMIT, sub.submit_body(model_upload=model_upload, data_upload=data_upload)
        )
        status = JobStatus.from_wire(view)
        return AsyncJob(self, status.job_id, name=status.name, submitted=status, model_bytes=sub.model_bytes)

    async def submit_many_prepared(self, subs: list[Submission], *, parallel: int = 4) -> list[AsyncJob]:
        """Submit prepared jobs, ``parallel`` uploads at a time, in order. The balance must cover
        every budget first (each job holds its own); if one submission fails, the jobs already
        submitted are cancelled (their holds come back) and the error is raised.

        Example::

            jobs = await grid.submit_many_prepared([prepare_submission(m, **kw) for m in models])
        """
        need = sum(int(sub.requirements["budget"]) for sub in subs)
        have = (await self.balance()).micro
        if have < need:
            raise InsufficientFunds(
                f"{self.principal} holds {micro_to_credits(have):.6f} credits, less than the "
                f"{micro_to_credits(need):.6f} the {len(subs)} budgets add up to"
            )
        gate = asyncio.Semaphore(max(1, parallel))

        async def one(sub: Submission) -> AsyncJob:
            async with gate:
                return await self.submit_prepared(sub)

        outcomes = await asyncio.gather(*(one(sub) for sub in subs), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            for job in outcomes:
                if isinstance(job, AsyncJob):
                    try:
                        await job.cancel()
                    except HeliumError as e:
                        log.warning("could not cancel job %s after a failed submit_many: %s", job.id, e)
            raise failed[0]
        return [o for o in outcomes if isinstance(o, AsyncJob)]

    async def wait_all(
        self, jobs: list[AsyncJob], timeout: float | None = None, *, progress: bool = True
    ) -> list[tuple[JobStatus, list[JobEvent]]]:
        """Follow every job to its end at once, with one combined bar (:class:`BurstTracker`);
        each job's final status and events, in order. Raises :class:`WaitTimeout` after
        ``timeout`` seconds (the jobs go on).

        Example::

            ends = await grid.wait_all(jobs)
        """
        firsts = await asyncio.gather(*(job.status() for job in jobs))
        tracker = BurstTracker([j.id for j in jobs], epochs={s.job_id: s.epochs for s in firsts}, enabled=progress)
        events: dict[str, list[JobEvent]] = {j.id: [] for j in jobs}
        previous, self.on_outage = self.on_outage, tracker.outage_changed

        async def follow(job: AsyncJob) -> None:
            async for event in job.follow():
                events[job.id].append(event)
                tracker.feed(event)

        try:
            follows = asyncio.gather(*(follow(job) for job in jobs))
            try:
                await asyncio.wait_for(follows, timeout)
            except asyncio.TimeoutError:
                raise WaitTimeout(f"{len(jobs)} jobs not all done after {timeout:g} s; they go on") from None
        finally:
            self.on_outage = previous
            tracker.close()
        finals = await asyncio.gather(*(job.status() for job in jobs))
        return [(final, events[final.job_id]) for final in finals]

    def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job of this principal (e.g. after a notebook restart).

        Example::

            job = grid.job("0193…")
            await job.wait()
        """
        if not isinstance(job_id, str) or not subjects.valid_id(job_id):
            raise BadRequest(f"not a job id: {job_id!r}")
        return AsyncJob(self, job_id)

    async def _status(self, job_id: str) -> JobStatus:
        return JobStatus.from_wire(await self._read(subjects.JOB_STATUS, {"job_id": job_id}))

    async def _cancel(self, job_id: str) -> JobStatus:
        return JobStatus.from_wire(await self._request(subjects.JOB_CANCEL, {"job_id": job_id}))

    async def _event_feed(
        self, job_id: str, *, live: bool, timeout: float | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """A job's events from the first. ``live``: go on until a terminal state (polling the
        job record after each silence of ``_POLL_SECONDS``); otherwise stop once caught up."""
        follower = Follower(self, job_id)
        try:
            pending = await follower.start()
        except NotFound:
            raise
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            raise Unavailable(f"the broker is not answering on {self.url}: {e or type(e).__name__}") from e
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            if not live and not pending:
                return
            while True:
                wait_s = _POLL_SECONDS
                if deadline is not None:
                    wait_s = min(wait_s, deadline - loop.time())
                    if wait_s <= 0:
                        raise WaitTimeout(f"job {job_id} is still running after {timeout:g}s")
                got = await follower.next(timeout=wait_s)
                if got is None:
                    if not live:
                        return
                    status = await self._status(job_id)
                    if status.is_terminal:
                        # The terminal event is missing or late; the record is authoritative.
                        yield StateChanged(job_id, status.updated_ms, "state", state=status.state, reason=status.reason)
                        return
                    continue
                msg, remaining = got
                try:
                    event = parse_event(decode(msg.data))
                except ProtocolError as e:
                    log.warning("skipping an unreadable event of job %s: %s", job_id, e)
                    continue
                yield event
                if live:
                    if isinstance(event, StateChanged) and event.state.is_terminal:
                        return
                elif not remaining:
                    return
        finally:
            await follower.close()

    async def _download(self, job_id: str, name: str, expected: Any = None) -> bytes:
        return await download(self._read, job_id, name, expected=expected, preferred_chunk=self._chunk)

    # -- accounts and workers -------------------------------------------------------------

    async def balance(self) -> Balance:
        """This principal's balance; see :meth:`helium_grid.Grid.balance`.

        Example::

            print((await grid.balance()).credits)
        """
        return Balance.from_wire(await self._read(subjects.ACCOUNT_BALANCE, {}))

    async def statement_lines(self, since_seq: int = 0) -> list[StatementLine]:
        """This principal's account's postings in ledger journal entries after ``since_seq``
        (0: all), oldest first, asked a page at a time (``account.statement``).

        Example::

            for line in await grid.statement_lines():
                print(line.time, line.kind, line.amount, line.balance)
        """
        lines: list[StatementLine] = []
        since = int(since_seq)
        while True:
            reply = await self._read(subjects.ACCOUNT_STATEMENT, {"since_seq": since})
            if not isinstance(reply, dict) or not isinstance(reply.get("lines"), list):
                raise ProtocolError(f"account.statement reply is malformed: {reply!r}")
            page = [StatementLine.from_wire(m) for m in reply["lines"]]
            if any(line.seq <= since for line in page) or any(b.seq < a.seq for a, b in zip(page, page[1:])):
                raise ProtocolError(f"account.statement after seq {since} answered lines out of order")
            lines.extend(page)
            if not reply.get("more"):
                return lines
            if not page:
                raise ProtocolError("account.statement says more lines remain but sent none")
            since = page[-1].seq

    async def statement(self, since_seq: int = 0) -> Any:
        """This principal's account as a DataFrame; see :meth:`helium_grid.Grid.statement`.

        Example::

            df = await grid.statement()
        """
        return statement_frame(await self.statement_lines(since_seq))

    async def earnings(self) -> Earnings:
        """What this principal's account earned and spent; see :meth:`helium_grid.Grid.earnings`.

        Example::

            print((await grid.earnings()).net)
        """
        return earnings_of(self.principal, await self.statement_lines())

    async def plot_statement(self) -> Any:
        """Earned, spent, net and balance over time; see :meth:`helium_grid.Grid.plot_statement`.

        Example::

            fig = await grid.plot_statement()
        """
        return plot_statement(await self.statement(), title=f"account of {self.principal}")

    async def jobs(self) -> list[JobStatus]:
        """This principal's jobs, oldest first; see :meth:`helium_grid.Grid.jobs`.

        Example::

            running = [j for j in await grid.jobs() if j.state is JobState.RUNNING]
        """
        reply = await self._read(subjects.JOB_LIST, {})
        if not isinstance(reply, dict) or not isinstance(reply.get("jobs"), list):
            raise ProtocolError(f"job.list reply is malformed: {reply!r}")
        return [JobStatus.from_wire(j) for j in reply["jobs"]]

    async def quote(self, model: torch.nn.Module, **kwargs: Any) -> Quote:
        """What ``submit(model, **kwargs)`` would cost and take now; see
        :meth:`helium_grid.Grid.quote`.

        Example::

            q = await grid.quote(model, train=(x, y), epochs=30, batch_size=64, max_price=5, budget=2)
        """
        reply = await self._read(subjects.JOB_QUOTE, prepare_quote(model, **kwargs))
        if not isinstance(reply, dict):
            raise ProtocolError(f"job.quote reply is malformed: {reply!r}")
        return Quote.from_wire(reply)

    async def workers(self) -> list[WorkerInfo]:
        """The workers on the grid; see :meth:`helium_grid.Grid.workers`.

        Example::

            for w in await grid.workers(): print(w.worker_id, w.price_per_hour)
        """
        reply = await self._read(subjects.WORKER_LIST, {})
        if not isinstance(reply, dict) or not isinstance(reply.get("workers"), list):
            raise ProtocolError(f"worker.list reply is malformed: {reply!r}")
        return [WorkerInfo.from_wire(w) for w in reply["workers"]]

    async def worker_log(self, worker_id: str, *, limit: int = 0) -> list[AuctionNote]:
        """Your worker's last auction notes, oldest first; see :meth:`helium_grid.Grid.worker_log`.

        Example::

            notes = await grid.worker_log("w1", limit=10)
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 2**32 - 1:
            raise ValueError(f"limit must be a whole number >= 0 (0: every note kept), not {limit!r}")
        reply = await self._read(subjects.WORKER_LOG, {"worker_id": worker_id, "limit": limit})
        if not isinstance(reply, dict) or not isinstance(reply.get("notes"), list):
            raise ProtocolError(f"worker.log reply is malformed: {reply!r}")
        return [AuctionNote.from_wire(n) for n in reply["notes"]]

    async def grant(self, principal: str, credits: float, *, id: str | None = None) -> Balance:
        """Mint credits to ``principal`` (operators only); see :meth:`helium_grid.Grid.grant`.

        Example::

            await operator.grant("alice", 100)
        """
        check_principal(principal)
        micro = credits_to_micro(credits, what="credits")
        if micro == 0:
            raise BadRequest("a grant must be positive")
        body = {"to": principal, "micro": micro, "id": id or str(uuid.uuid4())}
        return Balance.from_wire(await self._request(subjects.ACCOUNT_GRANT, body))


class AsyncJob:
    """A submitted job, for asyncio code; see :class:`helium_grid.Job`.

    Example::

        job = await grid.submit(...)
        final = await job.wait(progress=False)
        model = await job.result()
    """

    def __init__(
        self,
        grid: AsyncGrid,
        job_id: str,
        *,
        name: str | None = None,
        submitted: JobStatus | None = None,
        model_bytes: bytes | None = None,
    ) -> None:
        self.grid = grid
        self.id = job_id
        self.name = name
        #: The job record as ``job.submit`` returned it, if this handle came from a submit.
        self.submitted = submitted
        # The TorchScript this client uploaded, if this handle came from a submit.
        self._model_bytes = model_bytes

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, name={self.name!r})"

    async def status(self) -> JobStatus:
        """The job's current record.

        Example::

            print((await job.status()).state)
        """
        return await self.grid._status(self.id)

    async def cancel(self) -> JobStatus:
        """Ask the grid to stop the job; the worker is paid for checkpointed progress only.

        Example::

            await job.cancel()
        """
        return await self.grid._cancel(self.id)

    async def events(self) -> list[JobEvent]:
        """Every event of the job so far, oldest first.

        Example::

            losses = [e.loss for e in await job.events() if isinstance(e, Progress)]
        """
        await self.status()  # NotFound for a job that is not this principal's
        return [event async for event in self.grid._event_feed(self.id, live=False)]

    async def history(self) -> Any:
        """Per-epoch metrics so far as a ``pandas.DataFrame`` (epoch, step, loss, val_loss,
        val_accuracy, samples_per_sec, worker, time); see :meth:`helium_grid.Job.history`.

        Example::

            df = await job.history()
            print(df[["epoch", "loss", "val_accuracy"]].tail())
        """
        return history_frame(await self.events())

    async def plot(self) -> Any:
        """The loss and validation curves as a ``matplotlib.figure.Figure``; see
        :meth:`helium_grid.Job.plot`.

        Example::

            fig = await job.plot()
            fig.savefig("curves.png")
        """
        events = await self.events()
        return plot_history(history_frame(events), checkpoint_epochs(events), title=self.name or self.id)

    def follow(self, timeout: float | None = None) -> AsyncGenerator[JobEvent, None]:
        """The job's events from the first, then live, ending after a terminal state.

        Example::

            async for ev in job.follow():
                print(ev)
        """
        return self.grid._event_feed(self.id, live=True, timeout=timeout)

    async def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = True,
        plot: bool = False,
        raise_on_failure: bool = True,
    ) -> JobStatus:
        """Follow the job to its end with a progress bar (and with ``plot=True`` live curves in
        a notebook); the final :class:`JobStatus`.

        Raises :class:`JobFailed` for failed or expired jobs (unless ``raise_on_failure=False``)
        and :class:`WaitTimeout` after ``timeout`` seconds.

        Example::

            final = await job.wait(timeout=600)
        """
        first = await self.status()
        tracker = Tracker(bar_label(self.id, self.name), enabled=progress, total=first.epochs)
        live = LiveCurve(self.name or self.id[:8]) if plot else None
        previous, self.grid.on_outage = self.grid.on_outage, tracker.outage_changed
        try:
            async for event in self.follow(timeout):
                tracker.feed(event)
                if live is not None:
                    live.feed(event)
        finally:
            self.grid.on_outage = previous
            tracker.close()
            if live is not None:
                live.close()
        return finish(await self.status(), raise_on_failure=raise_on_failure)

    async def result_bytes(self) -> bytes:
        """The trained parameters and buffers as a safetensors state file (tensors only; see
        ``docs/PROTOCOL.md``), SHA-256 verified against the job record.

        Example::

            open("trained.safetensors", "wb").write(await job.result_bytes())
        """
        status = await self.status()
        if status.state is not JobState.COMPLETED:
            if status.state in (JobState.FAILED, JobState.EXPIRED):
                finish(status, raise_on_failure=True)
            raise Conflict(f"job {self.id} is {status.state.value}; it has no result (call job.wait() first)")
        if status.result is None:
            raise NotFound(f"job {self.id} completed but its record names no result")
        return await self.grid._download(self.id, "result", status.result)

    async def model_bytes(self) -> bytes:
        """The TorchScript this job was submitted with: the bytes this client uploaded, or
        (for a handle from :meth:`AsyncGrid.job`) the job's ``model`` artifact, SHA-256
        verified. Only the researcher can have written it: workers upload results and
        checkpoints only.

        Example::

            open("model.pt", "wb").write(await job.model_bytes())
        """
        if self._model_bytes is None:
            self._model_bytes = await self.grid._download(self.id, "model")
        return self._model_bytes

    async def result(self, map_location: str | torch.device | None = "cpu") -> torch.jit.ScriptModule:
        """The trained model: the researcher's own TorchScript module (``torch.jit.load`` of
        the bytes they submitted) with the trained tensors copied in, strictly by name, shape
        and dtype. Nothing a worker wrote is ever loaded as code.

        Example::

            model = await job.result()
            model.eval()
        """
        blob = await self.result_bytes()
        model = await self.model_bytes()
        return await asyncio.to_thread(trained_module, model, blob, map_location)
