"""Many jobs at once: a sweep's configurations, one combined progress view, and the jobs'
outcomes as one ``pandas.DataFrame``.

- :func:`sweep_configs`: the cartesian product of the arguments given as lists (``lr=[1e-3,
  1e-2]``, ``batch_size=[32, 64]``); a tuple is one value (``betas=(0.9, 0.99)``, ``train=(x,
  y)``), so only lists sweep.
- :class:`BurstTracker`: one bar for many jobs: epochs done over all epochs as the count, the
  jobs by state and the best training loss so far in the description.
- :func:`outcome_frame`: one row per job: its state, worker, price and pay, the last and best
  losses, validation metrics, time, and the swept parameters.

Example::

    >>> [p for p, _ in sweep_configs({"lr": [0.1, 0.01], "epochs": 3})]
    [{'lr': 0.1}, {'lr': 0.01}]
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import BadRequest
from ._limits import micro_to_credits
from .records import JobEvent, JobState, JobStatus, Progress, StateChanged

__all__ = ["sweep_configs", "sweep_name", "BurstTracker", "outcome_frame", "MAX_SWEEP"]

#: Jobs one sweep may make; more is almost always a mistake (a list where a value was meant).
MAX_SWEEP = 1024


def sweep_configs(kwargs: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(swept parameters, submit arguments)`` for each point of the grid the list-valued
    arguments of ``kwargs`` span, in the order ``itertools.product`` gives.

    Example::

        >>> [p for p, _ in sweep_configs({"lr": [1, 2], "batch_size": [8, 16]})]
        [{'lr': 1, 'batch_size': 8}, {'lr': 1, 'batch_size': 16}, {'lr': 2, 'batch_size': 8}, {'lr': 2, 'batch_size': 16}]
    """
    swept = {k: v for k, v in kwargs.items() if isinstance(v, list)}
    if not swept:
        raise BadRequest("sweep() needs at least one argument given as a list, e.g. lr=[1e-3, 1e-2]")
    empty = [k for k, v in swept.items() if not v]
    if empty:
        raise BadRequest(f"sweep(): {', '.join(empty)} is an empty list")
    size = math.prod(len(v) for v in swept.values())
    if size > MAX_SWEEP:
        raise BadRequest(f"sweep() would make {size} jobs, over the {MAX_SWEEP} one sweep may")
    fixed = {k: v for k, v in kwargs.items() if k not in swept}
    out = []
    for values in itertools.product(*swept.values()):
        params = dict(zip(swept, values))
        out.append((params, {**fixed, **params}))
    return out


def sweep_name(base: str | None, params: Mapping[str, Any]) -> str:
    """A sweep job's name: the base name and its parameters, at most 200 characters.

    Example::

        >>> sweep_name("mlp", {"lr": 0.01, "batch_size": 32})
        'mlp[lr=0.01,batch_size=32]'
    """
    inner = ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items())
    return f"{base or 'sweep'}[{inner}]"[:200]


class BurstTracker:
    """One progress bar for many jobs, fed their events as they arrive.

    Example::

        t = BurstTracker(["j1", "j2"], epochs={"j1": 3, "j2": 3}, enabled=False)
        t.feed(StateChanged("j1", 0, "state", state=JobState.COMPLETED))
        assert t.counts()["completed"] == 1
    """

    def __init__(self, job_ids: Sequence[str], *, epochs: Mapping[str, int], enabled: bool = True) -> None:
        self.states: dict[str, JobState | None] = {j: None for j in job_ids}
        self.epochs = dict(epochs)
        self.done: dict[str, int] = {j: 0 for j in job_ids}
        self.best_loss: float | None = None
        self.best_job: str | None = None
        self.outage: str | None = None
        self._bar: Any = None
        if enabled:
            from ._progress import BAR_FORMAT, tqdm_class

            self._bar = tqdm_class()(
                total=sum(self.epochs.values()),
                desc=f"{len(job_ids)} jobs",
                unit="epoch",
                dynamic_ncols=True,
                bar_format=BAR_FORMAT,
            )

    def counts(self) -> Counter[str]:
        """Jobs by state (``submitted`` for those with no state event yet)."""
        return Counter(s.value if s else "submitted" for s in self.states.values())

    def feed(self, event: JobEvent) -> None:
        """Take one event of one of the jobs into account."""
        job = event.job_id
        if job not in self.states:
            return
        if isinstance(event, StateChanged):
            self.states[job] = event.state
            if event.state is JobState.COMPLETED:
                self.done[job] = self.epochs.get(job, self.done[job])
        elif isinstance(event, Progress):
            self.done[job] = event.epoch
            if math.isfinite(event.loss) and (self.best_loss is None or event.loss < self.best_loss):
                self.best_loss, self.best_job = event.loss, job
        else:
            return
        self._render()

    def outage_changed(self, message: str | None) -> None:
        """The broker stopped answering (``message``) or answers again."""
        self.outage = message
        self._render()

    def _render(self) -> None:
        if self._bar is None:
            return
        order = ["submitted", "queued", "auctioning", "assigned", "running", "completed", "failed", "cancelled", "expired"]
        counts = self.counts()
        parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
        if self.best_loss is not None:
            parts.append(f"best loss {self.best_loss:.4g}")
        if self.outage:
            parts.append(self.outage)
        self._bar.n = sum(self.done.values())
        self._bar.set_postfix_str(", ".join(parts)[:120], refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Close the bar (leaves it on screen)."""
        if self._bar is not None:
            self._render()
            self._bar.close()
            self._bar = None


def _last(values: list[float]) -> float:
    return values[-1] if values else math.nan


def outcome_frame(rows: Sequence[tuple[Any, JobStatus, list[JobEvent], Mapping[str, Any]]]) -> Any:
    """One row per ``(job, final status, its events, swept parameters)``: ``job_id``, ``name``,
    ``state``, ``reason``, ``worker``, ``price`` and ``paid`` (credits), ``epochs_done``,
    ``loss`` (the last epoch's), ``best_loss``, ``val_loss``, ``val_accuracy`` (the last
    reported), ``seconds`` (submitted → last change), the swept parameters, and ``job`` (the
    handle: ``df.loc[df.val_loss.idxmin(), "job"].result()``).

    Example::

        >>> outcome_frame([]).columns.tolist()[:3]
        ['job_id', 'name', 'state']
    """
    import pandas as pd

    base = ["job_id", "name", "state", "reason", "worker", "price", "paid", "epochs_done", "loss", "best_loss",
            "val_loss", "val_accuracy", "seconds"]  # fmt: skip
    records = []
    swept: list[str] = []
    for job, status, events, params in rows:
        progress = [e for e in events if isinstance(e, Progress)]
        losses = [float(e.loss) for e in progress if math.isfinite(e.loss)]
        record = {
            "job_id": status.job_id,
            "name": status.name,
            "state": status.state.value,
            "reason": status.reason,
            "worker": status.worker,
            "price": math.nan if status.price_micro is None else micro_to_credits(status.price_micro),
            "paid": micro_to_credits(status.paid_micro),
            "epochs_done": status.epochs_done,
            "loss": _last(losses),
            "best_loss": min(losses) if losses else math.nan,
            "val_loss": _last([e.val_loss for e in progress if e.val_loss is not None]),
            "val_accuracy": _last([e.val_accuracy for e in progress if e.val_accuracy is not None]),
            "seconds": max(0, status.updated_ms - status.created_ms) / 1000,
        }
        for k, v in params.items():
            if k not in swept:
                swept.append(k)
            record[k] = v
        record["job"] = job
        records.append(record)
    return pd.DataFrame(records, columns=[*base, *swept, "job"])
