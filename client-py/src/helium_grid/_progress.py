"""The progress bar of ``Job.wait``: a ``tqdm.auto`` bar (a widget in Jupyter when ipywidgets is
installed, text otherwise) fed with job events, epoch/epochs as the count, loss in the postfix.

The label is the job's name, or the first 8 characters of its id; once awarded, the description
names the worker and the contract price in credits. The count is set from each progress event
(``bar.n = epoch``), so a replayed (finished or half-done) job jumps to where it is, and tqdm's
own rate and elapsed time are left out of the bar: they would time the replay, not the training
(``4021 epoch/s``). The postfix shows the worker's measured ``samples/s`` for live progress only
(an event at most ``LIVE_SECONDS`` old when it arrives).

Example::

    tracker = Tracker(job_id, enabled=True)
    for ev in events:
        tracker.feed(ev)
    tracker.close()
"""

from __future__ import annotations

import time
from typing import Any

from .records import Awarded, JobEvent, JobState, Progress, StateChanged, credits_text

__all__ = ["Tracker", "tqdm_class", "bar_label", "BAR_FORMAT", "LIVE_SECONDS"]

#: No ``{rate}``, ``{elapsed}`` or ``{remaining}``: a replay would make them up.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} epochs{postfix}"
#: A progress event younger than this when it arrives is live (its samples/s is shown).
LIVE_SECONDS = 10.0


def bar_label(job_id: str, name: str | None) -> str:
    """The bar's label: the job's name, else a short id (its first 8 characters).

    Example::

        >>> bar_label("0193f0c2-8d1e-7c3a-9f00-1234", None)
        '0193f0c2'
    """
    return name or job_id[:8]


def tqdm_class() -> Any:
    """``tqdm.auto.tqdm`` (the notebook widget in Jupyter, text elsewhere). Without ipywidgets,
    ``tqdm.auto`` would fall back to the text bar with a warning; take the text bar directly.

    Example::

        bar = tqdm_class()(total=10)
    """
    try:
        import ipywidgets  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm as text_tqdm  # type: ignore[import-untyped]

        return text_tqdm
    from tqdm.auto import tqdm as auto_tqdm  # type: ignore[import-untyped]

    return auto_tqdm


class Tracker:
    """Follows a job's events: remembers the last state and renders the bar.

    Example::

        t = Tracker("j1", enabled=False)
        t.feed(StateChanged("j1", 0, "state", state=JobState.COMPLETED))
        assert t.finished
    """

    def __init__(self, label: str, *, enabled: bool = True, total: int | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.total = total
        self.state: JobState | None = None
        self.reason: str | None = None
        #: Shown instead of the reason while the broker does not answer.
        self.outage: str | None = None
        self.worker: str | None = None
        self.price_micro: int | None = None
        self._bar: Any = None
        self._shown: tuple[str, str | None] | None = None

    @property
    def finished(self) -> bool:
        """Whether a terminal state event has been seen."""
        return self.state is not None and self.state.is_terminal

    def _ensure_bar(self, total: int | None) -> Any:
        if not self.enabled:
            return None
        if self._bar is None:
            self._bar = tqdm_class()(
                total=total, desc=self.label, unit="epoch", dynamic_ncols=True, bar_format=BAR_FORMAT
            )
        elif total is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()
        return self._bar

    def _describe(self) -> None:
        bar = self._ensure_bar(self.total)
        if bar is None:
            return
        state = self.state.value if self.state else "submitted"
        where = ""
        if self.worker and self.state in (JobState.ASSIGNED, JobState.RUNNING, JobState.COMPLETED):
            where = f" on {self.worker}"
            if self.price_micro is not None:
                where += f" at {credits_text(self.price_micro)} credits"
        shown = f"{self.label} {state}{where}"
        waiting = self.outage or (self.reason if self.reason and not self.finished else None)
        if (shown, waiting) == self._shown:
            return
        self._shown = (shown, waiting)
        bar.set_description(shown, refresh=False)
        if waiting:
            bar.set_postfix_str(waiting[:60], refresh=False)
        if not self.finished:  # close() draws the last state
            bar.refresh()

    def outage_changed(self, message: str | None) -> None:
        """The broker stopped answering (``message`` says so on the bar) or answers again."""
        self.outage = message
        self._describe()

    def feed(self, event: JobEvent) -> None:
        """Take one event into account."""
        if isinstance(event, StateChanged):
            self.state = event.state
            self.reason = event.reason
            self._describe()
        elif isinstance(event, Awarded):
            self.worker = event.worker
            self.price_micro = event.price_micro
            self._describe()
        elif isinstance(event, Progress):
            self.total = event.epochs or self.total
            bar = self._ensure_bar(self.total)
            if bar is not None:
                bar.n = event.epoch
                shown = {"loss": f"{event.loss:.4g}"}
                if event.val_accuracy is not None:
                    shown["val_acc"] = f"{event.val_accuracy:.3f}"
                elif event.val_loss is not None:
                    shown["val_loss"] = f"{event.val_loss:.4g}"
                if time.time() * 1000 - event.at_ms <= LIVE_SECONDS * 1000 and event.samples_per_sec > 0:
                    shown["samples/s"] = f"{event.samples_per_sec:.3g}"
                bar.set_postfix(shown, refresh=False)
                bar.refresh()

    def close(self) -> None:
        """Close the bar (leaves it on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
