"""The blocking facade: :class:`Grid` and :class:`Job`.

Each ``Grid`` runs the async core on a private event loop in a daemon thread and submits
coroutines to it with ``asyncio.run_coroutine_threadsafe``. That works the same in a plain script
and in Jupyter (whose main thread already runs a loop, so ``asyncio.run`` would fail there).
CPU-bound work (scripting and saving the model, loading the result) and the progress bar run
in the caller's thread, so the bar renders in the notebook cell that called ``wait``.

Example::

    from helium_grid import Grid

    with Grid("nats://127.0.0.1:4222", principal="alice") as grid:
        job = grid.submit(model, train=(x, y), epochs=10, batch_size=64,
                          max_price=2.0, budget=1.0)
        job.wait()
        trained = job.result()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch

from ._async import DEFAULT_OUTAGE_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_URL, AsyncGrid, AsyncJob, finish, trained_module
from ._history import LiveCurve
from ._progress import Tracker, bar_label
from ._burst import outcome_frame, sweep_configs, sweep_name
from ._submission import prepare_submission
from .errors import BadRequest
from .records import Balance, Earnings, JobEvent, JobStatus, Quote, StatementLine, WorkerInfo

__all__ = ["Grid", "Job"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it is done; Ctrl-C cancels it."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a helium_grid.Grid was called from inside its own event loop; use AsyncGrid there")
        if not self.alive:
            coro.close()
            raise RuntimeError("this Grid is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except (KeyboardInterrupt, concurrent.futures.TimeoutError):
            future.cancel()
            raise

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=10)


def _shutdown(runner: _LoopThread, core: AsyncGrid | None) -> None:
    try:
        if core is not None and runner.alive:
            runner.run(core.close(), timeout=10)
    except Exception:  # closing is best effort: the process may be exiting
        pass
    finally:
        runner.stop()


class _SyncIterator(Iterator[T]):
    """Drives an async iterator that lives on the loop thread, one item per call."""

    def __init__(self, runner: _LoopThread, agen: AsyncGenerator[T, None]) -> None:
        self._runner = runner
        self._agen = agen
        self._done = False

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            return self._runner.run(self._agen.__anext__())
        except StopAsyncIteration:
            self._done = True
            raise StopIteration from None

    def close(self) -> None:
        if not self._done:
            self._done = True
            if self._runner.alive:
                try:
                    self._runner.run(self._agen.aclose(), timeout=10)
                except (RuntimeError, concurrent.futures.TimeoutError):
                    pass  # interrupted mid-step: the generator finishes on the loop by itself


class Grid:
    """A connection to a Helium grid as one principal (blocking API; works in Jupyter).

    ``url`` is the grid's NATS server; ``creds`` the ``.creds`` file the grid's operator
    issued you (default ``$HELIUM_CREDS``; the local grid's are in ``.helium/grid/creds/``):
    you act as the principal it names, and nats-server lets you do nothing else. ``principal``,
    if given, must match it. ``tls_ca`` (default ``$HELIUM_TLS_CA``) is a CA certificate to
    trust for a ``tls://`` grid (deploy/tls.sh makes one). ``timeout`` bounds each request.
    With no broker answering (it is restarting), reads — ``status``, ``wait``, ``result``,
    ``jobs``, ``balance`` — keep asking for ``outage_timeout`` seconds (default 120) before they
    raise :class:`~helium_grid.Unavailable`; submits and cancels raise at once.

    Example::

        grid = Grid("nats://127.0.0.1:4222", creds=".helium/grid/creds/researcher.creds")
        print(grid.balance().credits)
        grid.close()
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        creds: str | os.PathLike[str] | None = None,
        principal: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 5.0,
        outage_timeout: float = DEFAULT_OUTAGE_TIMEOUT,
        **nats_options: Any,
    ) -> None:
        self._runner = _LoopThread(name="helium-grid")
        self._core: AsyncGrid | None = None
        try:
            self._core = self._runner.run(
                AsyncGrid.connect(
                    url,
                    creds=creds,
                    principal=principal,
                    tls_ca=tls_ca,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    outage_timeout=outage_timeout,
                    **nats_options,
                )
            )
        except BaseException:
            self._runner.stop()
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._core)

    @property
    def url(self) -> str:
        """The NATS URL this grid is connected to."""
        return self._async.url

    @property
    def principal(self) -> str:
        """The account this grid acts as."""
        return self._async.principal

    @property
    def _async(self) -> AsyncGrid:
        if self._core is None:
            raise RuntimeError("this Grid is closed")
        return self._core

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        """Close the connection and stop the background loop (idempotent).

        Example::

            grid.close()
        """
        self._finalizer()

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if not self._finalizer.alive else "open"
        return f"Grid(url={self._async.url!r}, principal={self._async.principal!r}, {state})"

    def submit(
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
    ) -> Job:
        """Train ``model`` on the grid: checks the arguments, scripts the model, uploads model
        and data, and submits the job to the auction.

        - ``model``: an ``nn.Module`` (scripted here with ``torch.jit.script``; a module that
          cannot be scripted raises :class:`~helium_grid.InvalidModel`) or a ``ScriptModule``
          (e.g. from ``torch.jit.trace``).
        - ``train``: ``(x, y)`` tensors with the same first dimension; ``validation`` likewise.
        - ``loss``: ``cross_entropy``, ``mse``, ``l1``, ``bce_with_logits``, ``nll``, or
          ``module`` (the model's exported ``training_loss(x, y)``). Left out: ``module`` when
          the model exports ``training_loss``, else ``cross_entropy``.
        - ``optimizer``: ``sgd``, ``adam`` (default) or ``adamw``, with ``lr``, ``momentum``,
          ``nesterov`` (sgd), ``betas``, ``eps`` (adam, adamw) and ``weight_decay`` as in
          ``torch.optim``; each one left out takes torch.optim's default for that optimizer
          (``lr=1e-3``; ``weight_decay`` 0, but ``1e-2`` for adamw). ``seed`` fixes the batch order.
        - ``max_price``: most credits per device-hour; ``budget``: most credits for the job.
        - ``min_memory_gb``, ``device`` (``any``/``cpu``/``cuda``), ``deadline`` (seconds from
          now or a ``datetime``) constrain the auction.
        - ``checkpoint_every``: optimizer steps (``500``) or training time (``"30s"``, ``"5 min"``,
          a ``timedelta``; default every 30 s) between checkpoints. If its worker is lost, the
          job resumes from the last checkpoint and that worker is paid up to it.

        Before any upload, one forward and the loss run on the first ``min(batch_size, 64)``
        rows of each split on your CPU, on a copy of the model: what cannot train (output and
        target shapes that would broadcast, cross_entropy over a single output, class labels
        outside the output's range, a non-finite loss, a loss no trainable parameter reaches)
        raises :class:`~helium_grid.InvalidData` or :class:`~helium_grid.InvalidModel` naming
        the shapes and dtypes.

        Raises :class:`~helium_grid.BadRequest` (and subclasses) before any upload when an
        argument is wrong, or the broker's error (e.g. ``InsufficientFunds``).

        Example::

            job = grid.submit(model, train=(x, y), epochs=30, batch_size=64, lr=1e-2,
                              max_price=5.0, budget=2.0, name="digits-mlp")
        """
        prepared = prepare_submission(
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
        return Job(self, self._run(self._async.submit_prepared(prepared)))

    def submit_many(self, jobs: Sequence[Mapping[str, Any]], *, parallel: int = 4) -> list[Job]:
        """Submit several jobs at once: each mapping holds ``model`` and the keyword arguments
        of :meth:`submit`. Every job is checked (and scripted, and its trial step run) before
        any upload; the balance must cover all the budgets (each job holds its own, and what
        it does not spend comes back); uploads run ``parallel`` at a time. If a submission
        fails, those already made are cancelled and the error is raised.

        Example::

            jobs = grid.submit_many([dict(model=m, train=(x, y), epochs=10, batch_size=64,
                                          max_price=5, budget=1) for m in models])
            df = helium_grid.wait_all(jobs)
        """
        prepared = []
        for i, spec in enumerate(jobs):
            if not isinstance(spec, Mapping) or "model" not in spec:
                raise BadRequest(f"submit_many: job {i} must be a mapping with a 'model' and submit()'s arguments")
            kwargs = dict(spec)
            prepared.append(prepare_submission(kwargs.pop("model"), **kwargs))
        cores = self._run(self._async.submit_many_prepared(prepared, parallel=parallel))
        return [Job(self, core) for core in cores]

    def sweep(self, model: torch.nn.Module, *, parallel: int = 4, **kwargs: Any) -> list[Job]:
        """One job per point of the grid spanned by the arguments given as lists, e.g.
        ``lr=[1e-3, 1e-2], batch_size=[32, 64]`` (4 jobs); every other argument as in
        :meth:`submit` (a tuple is one value: ``betas=(0.9, 0.99)``). Each job starts from the
        same ``model``, is named after its point (``mlp[lr=0.001,batch_size=32]``) and keeps
        it in ``job.params``; they are submitted as by :meth:`submit_many`.

        Example::

            jobs = grid.sweep(model, train=(x, y), epochs=20, lr=[1e-3, 1e-2], batch_size=[32, 64],
                              max_price=5, budget=0.5, name="mlp")
            df = helium_grid.wait_all(jobs)        # one row per job, with lr and batch_size
            best = df.loc[df.loss.idxmin(), "job"].result()
        """
        points = sweep_configs(kwargs)
        specs = [{**args, "model": model, "name": sweep_name(kwargs.get("name"), params)} for params, args in points]
        made = self.submit_many(specs, parallel=parallel)
        for job, (params, _) in zip(made, points):
            job.params = params
        return made

    def quote(self, model: torch.nn.Module, **kwargs: Any) -> Quote:
        """What ``submit(model, **kwargs)`` would cost and take on the grid's current asks,
        without submitting anything: no upload, no hold, no auction. Takes the same keyword
        arguments as :meth:`submit`; those that shape only the training are ignored.

        The expected ``price`` is what the auction would charge if the workers it would
        invite now bid their asks; while the asks do not change, a job submitted next is
        charged within ``[low, high]`` whichever of those workers are still free, and
        ``duration`` is the expected winner's estimate. ``reason`` says why no worker could
        take the job (its price is then 0).

        Example::

            q = grid.quote(model, train=(x, y), epochs=30, batch_size=64, max_price=5, budget=2)
            if q.available:
                print(f"{q.price:.6f} credits ({q.low:.6f}-{q.high:.6f}), about {q.duration}")
        """
        return self._run(self._async.quote(model, **kwargs))

    def job(self, job_id: str) -> Job:
        """A handle on an existing job of this principal, e.g. after a kernel restart.

        Example::

            job = grid.job("0193f1c2-…")
            job.wait()
        """
        return Job(self, self._async.job(job_id))

    def balance(self) -> Balance:
        """This principal's balance.

        Example::

            print(f"{grid.balance().credits:.6f} credits")
        """
        return self._run(self._async.balance())

    def statement(self, since_seq: int = 0) -> Any:
        """This principal's account, posting by posting, oldest first: a ``pandas.DataFrame``
        with columns ``time`` (UTC), ``seq`` (ledger journal entry), ``transfer`` (its id),
        ``job``, ``counterparty`` (the other account: ``mint``, ``escrow:<job>``), ``kind``
        (``grant``, ``hold``, ``pay``, ``refund``, ``sweep``), ``amount`` and ``balance`` in
        credits (float), ``amount_micro`` and ``balance_micro`` exact, and ``memo``. A GPU
        owner's workers are paid into this same account (``pay`` lines), and its jobs are paid
        out of it (``hold`` lines, less ``refund``). ``since_seq`` keeps the postings of
        entries after that one (e.g. the last ``seq`` seen).

        Example::

            df = grid.statement()
            print(df[["time", "kind", "job", "amount", "balance"]])
            assert df["balance_micro"].iloc[-1] == grid.balance().micro
        """
        return self._run(self._async.statement(since_seq))

    def statement_lines(self, since_seq: int = 0) -> list[StatementLine]:
        """The postings of :meth:`statement` as records.

        Example::

            pays = [line for line in grid.statement_lines() if line.kind == "pay"]
        """
        return self._run(self._async.statement_lines(since_seq))

    def earnings(self) -> Earnings:
        """What this account earned (``pay`` postings: your workers' pay), spent (``hold``
        postings less ``refund`` and ``sweep``: your jobs' cost) and was granted, exact to the
        micro-credit; ``net`` = earned − spent. Each is a :class:`Balance`.

        Example::

            e = grid.earnings()
            print(f"earned {e.earned:.6f}, spent {e.spent:.6f}, net {e.net:+.6f} credits")
        """
        return self._run(self._async.earnings())

    def plot_statement(self) -> Any:
        """This account over time, a ``matplotlib.figure.Figure``: cumulative earned and spent
        credits with the break-even point where earned caught up with spent, and below, net
        (earned − spent) against the break-even level 0 with the balance.

        Example::

            fig = grid.plot_statement()
            fig.savefig("account.png")
        """
        return self._run(self._async.plot_statement())

    def jobs(self) -> list[JobStatus]:
        """This principal's jobs on the grid, oldest first: find a job whose handle was lost
        (an interrupted cell), then reattach with :meth:`job`.

        Example::

            for s in grid.jobs():
                print(s.job_id, s.state.value, s.reason or "")
            grid.job(grid.jobs()[-1].job_id).wait()
        """
        return self._run(self._async.jobs())

    def workers(self) -> list[WorkerInfo]:
        """The workers on the grid with their standing asks.

        Example::

            for w in grid.workers():
                print(w.worker_id, w.owner, w.price_per_hour, w.device)
        """
        return self._run(self._async.workers())

    def worker_log(self, worker_id: str, *, limit: int = 0) -> Any:
        """Why your worker did or did not win its last auctions: a pandas DataFrame, one row per
        invitation, oldest first (columns ``time``, ``job``, ``verdict`` — won, lost, declined,
        refused, no_answer —, ``reason`` in words, ``price_per_hour`` and ``cost`` of its bid,
        and for a lost bid the ``winning_price_per_hour`` and ``winning_cost``, in credits).
        The broker keeps the last 64 per worker; ``limit`` keeps the newest ones. Only the
        worker's owner may read it (:class:`Unauthorized` otherwise).

        Example::

            log = grid.worker_log("w1")
            log[log.verdict == "lost"].reason.iloc[-1]   # 'outbid: 1.200000 against your 1.500000 credits/h (…)'
        """
        from ._worker_log import notes_frame

        return notes_frame(self._run(self._async.worker_log(worker_id, limit=limit)))

    def grant(self, principal: str, credits: float, *, id: str | None = None) -> Balance:
        """Mint ``credits`` to ``principal`` (operators only; the dev mint). ``id`` makes a retry
        idempotent (a fresh UUID by default). Returns the grantee's new balance.

        Example::

            operator = Grid(url, principal="operator")
            operator.grant("alice", 100)
        """
        return self._run(self._async.grant(principal, credits, id=id))


class Job:
    """A submitted training job (blocking API).

    Example::

        job = grid.submit(...)
        print(job.id, job.status().state)
        final = job.wait()
        model = job.result()
    """

    def __init__(self, grid: Grid, core: AsyncJob) -> None:
        self._grid = grid
        self._core = core
        #: The swept parameters of a job made by :meth:`Grid.sweep` (else empty).
        self.params: dict[str, Any] = {}

    @property
    def id(self) -> str:
        """The job id."""
        return self._core.id

    @property
    def name(self) -> str | None:
        """The name given at submit, if any."""
        return self._core.name

    @property
    def submitted(self) -> JobStatus | None:
        """The job record ``job.submit`` returned (``None`` for handles from ``grid.job``)."""
        return self._core.submitted

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r})"

    def status(self) -> JobStatus:
        """The job's current record.

        Example::

            s = job.status()
            print(s.state, s.reason, s.epochs_done, "/", s.epochs)
        """
        return self._grid._run(self._core.status())

    def cancel(self) -> JobStatus:
        """Stop the job; the worker is paid for checkpointed progress, the rest returns.

        Example::

            job.cancel()
        """
        return self._grid._run(self._core.cancel())

    def events(self) -> list[JobEvent]:
        """Every event of the job so far, oldest first (state changes, the award, progress).

        Example::

            for ev in job.events():
                if isinstance(ev, Progress):
                    print(ev.epoch, ev.loss)
        """
        return self._grid._run(self._core.events())

    def history(self) -> Any:
        """Per-epoch metrics so far, from the job's events, as a ``pandas.DataFrame``: ``epoch``,
        ``step`` (the optimizer step at the epoch's end), ``loss`` (mean training loss),
        ``val_loss`` and ``val_accuracy`` (NaN without a validation split, or for a loss that
        is not classification), ``samples_per_sec``, ``worker`` (whose award was in force when
        the epoch was reported) and ``time`` (UTC). An epoch reported twice (a resume after a
        lost worker) keeps the later report.

        Example::

            df = job.history()
            df.plot(x="epoch", y=["loss", "val_loss"])
        """
        return self._grid._run(self._core.history())

    def plot(self) -> Any:
        """The training curves as a ``matplotlib.figure.Figure``: loss and val_loss against
        epoch, val_accuracy on a second subplot when the job has one, verified checkpoints as
        dotted lines. Made without pyplot: a notebook cell that ends with it shows it once.

        Example::

            fig = job.plot()
            fig.savefig("curves.png")
        """
        return self._grid._run(self._core.plot())

    def follow(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events from the first, then live, ending after a terminal state.

        Example::

            for ev in job.follow(timeout=300):
                print(ev)
        """
        it = _SyncIterator(self._grid._runner, self._core.follow(timeout))
        try:
            yield from it
        finally:
            it.close()

    def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = True,
        plot: bool = False,
        raise_on_failure: bool = True,
    ) -> JobStatus:
        """Follow the job to its end, with a progress bar (epoch/epochs, loss), and return
        the final :class:`JobStatus`. ``plot=True`` keeps the loss and validation curves
        drawn live next to the bar in a notebook (redrawn at most once a second).

        A late or re-run cell replays the job's history first. Raises
        :class:`~helium_grid.JobFailed` for failed or expired jobs (unless
        ``raise_on_failure=False``) and :class:`~helium_grid.WaitTimeout` after ``timeout``
        seconds (the job goes on).

        Example::

            final = job.wait()
            print(final.worker, final.paid)
        """
        first = self.status()
        tracker = Tracker(bar_label(self.id, self.name), enabled=progress, total=first.epochs)
        live = LiveCurve(self.name or self.id[:8]) if plot else None
        try:
            for event in self.follow(timeout):
                tracker.feed(event)
                if live is not None:
                    live.feed(event)
        finally:
            tracker.close()
            if live is not None:
                live.close()
        return finish(self.status(), raise_on_failure=raise_on_failure)

    def result_bytes(self) -> bytes:
        """The trained parameters and buffers as a safetensors state file (tensors only),
        SHA-256 verified.

        Example::

            with open("trained.safetensors", "wb") as f:
                f.write(job.result_bytes())
        """
        return self._grid._run(self._core.result_bytes())

    def model_bytes(self) -> bytes:
        """The TorchScript this job was submitted with (see :meth:`AsyncJob.model_bytes`).

        Example::

            open("model.pt", "wb").write(job.model_bytes())
        """
        return self._grid._run(self._core.model_bytes())

    def result(self, map_location: str | torch.device | None = "cpu") -> torch.jit.ScriptModule:
        """The trained model: your own TorchScript module with the trained parameters and
        buffers loaded into it (strictly by name, shape and dtype); nothing a worker wrote
        runs as code.

        Example::

            model = job.result()
            accuracy = (model(x_test).argmax(1) == y_test).float().mean()
        """
        blob = self.result_bytes()
        return trained_module(self.model_bytes(), blob, map_location)


def wait_all(jobs: Sequence[Job], timeout: float | None = None, *, progress: bool = True, results: bool = False) -> Any:
    """Follow many jobs of one grid to their ends at once, with one combined progress view (jobs
    by state, the best loss so far), and return a ``pandas.DataFrame`` with one row per job:
    ``job_id``, ``name``, ``state``, ``reason``, ``worker``, ``price``, ``paid``,
    ``epochs_done``, ``loss``, ``best_loss``, ``val_loss``, ``val_accuracy``, ``seconds``, the
    swept parameters of :meth:`Grid.sweep`, and ``job`` (the handle); with ``results=True``
    also ``model``, the trained module of each completed job. A failed job is a row (its
    ``state`` and ``reason`` say why), not an exception; raises
    :class:`~helium_grid.WaitTimeout` after ``timeout`` seconds (the jobs go on).

    Example::

        df = helium_grid.wait_all(jobs)
        print(df[["name", "state", "loss", "paid"]])
    """
    jobs = list(jobs)
    if not jobs:
        return outcome_frame([])
    grids = {id(job._grid) for job in jobs}
    if len(grids) != 1:
        raise BadRequest("wait_all: every job must come from the same Grid")
    grid = jobs[0]._grid
    ends = grid._run(grid._async.wait_all([job._core for job in jobs], timeout, progress=progress))
    frame = outcome_frame([(job, final, events, job.params) for job, (final, events) in zip(jobs, ends)])
    if results:
        frame["model"] = [job.result() if final.state.value == "completed" else None for job, (final, _) in zip(jobs, ends)]
    return frame
