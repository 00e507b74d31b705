"""A job's training history from its events: a pandas DataFrame of per-epoch metrics, and the
matplotlib figure of its curves (``job.history()``, ``job.plot()``).

Each ``progress`` event is one row; ``worker`` is the one whose award (the latest ``awarded``
event before the progress) was in force when it came. A job resumed on another worker after a
lost one may report an epoch twice: the later report is the one kept (the trained model
descends from it). ``step`` is the optimizer step at the epoch's end (NaN from a broker that
does not send it). Verified checkpoints (``checkpointed`` events) are drawn as dotted vertical lines.

Example::

    df = history_frame(job.events())
    fig = plot_history(df, checkpoint_epochs(job.events()))
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .records import Awarded, Checkpointed, JobEvent, Progress

__all__ = ["COLUMNS", "history_frame", "checkpoint_epochs", "plot_history"]

#: The columns of ``job.history()``, in order.
COLUMNS = ("epoch", "step", "loss", "val_loss", "val_accuracy", "samples_per_sec", "worker", "time")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def history_frame(events: Iterable[JobEvent]) -> Any:
    """Per-epoch metrics of a job (one row per epoch, ordered by epoch), a ``pandas.DataFrame``
    with :data:`COLUMNS`; ``time`` is a UTC timestamp (from the event's ``at_ms``).

    Example::

        >>> history_frame([]).columns.tolist()[:3]
        ['epoch', 'step', 'loss']
    """
    import pandas as pd

    worker: str | None = None
    rows: dict[int, dict[str, Any]] = {}
    for ev in events:
        if isinstance(ev, Awarded):
            worker = ev.worker
        elif isinstance(ev, Progress):
            step = ev.step
            rows.pop(ev.epoch, None)  # a re-reported epoch (after a resume): the later one counts
            rows[ev.epoch] = {
                "epoch": ev.epoch,
                "step": math.nan if step is None else float(step),
                "loss": float(ev.loss),
                "val_loss": _nan(ev.val_loss),
                "val_accuracy": _nan(ev.val_accuracy),
                "samples_per_sec": float(ev.samples_per_sec),
                "worker": worker,
                "time": ev.at_ms,
            }
    ordered = sorted(rows.values(), key=lambda r: r["epoch"])
    df = pd.DataFrame(ordered, columns=list(COLUMNS))
    df["epoch"] = df["epoch"].astype("int64")
    for col in ("step", "loss", "val_loss", "val_accuracy", "samples_per_sec"):
        df[col] = df[col].astype("float64")
    df["worker"] = df["worker"].astype("object")
    df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ms", utc=True)
    return df


def checkpoint_epochs(events: Iterable[JobEvent]) -> list[int]:
    """The epochs complete at each verified checkpoint, oldest first.

    Example::

        >>> checkpoint_epochs([Checkpointed("j", 0, "checkpointed", step=40, epoch=3)])
        [3]
    """
    return [ev.epoch for ev in events if isinstance(ev, Checkpointed)]


def _show_figures_in_ipython() -> None:
    """In an IPython kernel, make a returned ``Figure`` display as a PNG (the inline backend
    registers that formatter only once pyplot is imported; this figure is made without it)."""
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
        from IPython.core.pylabtools import select_figure_formats  # type: ignore[import-not-found]
        from matplotlib.figure import Figure
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    if Figure in shell.display_formatter.formatters["image/png"].type_printers:
        return  # pyplot's inline backend (or the user) chose the formats already
    select_figure_formats(shell, {"png"})


def plot_history(df: Any, checkpoints: Sequence[int] = (), *, title: str | None = None) -> Any:
    """The training curves of a history frame: loss and val_loss against epoch on the left
    axes, val_accuracy (when the job has one) on a second subplot; a ``matplotlib.figure.Figure``
    made without pyplot (no global state; a notebook shows the returned figure once).

    Example::

        fig = plot_history(job.history())
        fig.savefig("curves.png")
    """
    from matplotlib.figure import Figure

    has_acc = bool(df["val_accuracy"].notna().any())
    fig = Figure(figsize=(10 if has_acc else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2) if has_acc else [fig.subplots()]
    ax_loss = axes[0]
    epochs = df["epoch"].to_numpy()
    ax_loss.plot(epochs, df["loss"].to_numpy(), marker=".", label="loss")
    if df["val_loss"].notna().any():
        ax_loss.plot(epochs, df["val_loss"].to_numpy(), marker=".", label="val_loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    if has_acc:
        ax_acc = axes[1]
        ax_acc.plot(epochs, df["val_accuracy"].to_numpy(), marker=".", color="tab:green", label="val_accuracy")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_title("validation accuracy")
    for i, epoch in enumerate(checkpoints):
        for ax in axes:
            ax.axvline(epoch, color="grey", linestyle=":", linewidth=1, label="checkpoint" if i == 0 else None)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _show_figures_in_ipython()
    return fig


class LiveCurve:
    """The curves of a job kept up to date while ``job.wait(plot=True)`` follows it: fed every
    event, it redraws at most every ``every`` seconds (and once at the end) into one display
    slot of the notebook, next to the progress bar. Outside IPython there is nowhere to draw
    live; the final figure is kept in :attr:`figure` either way.

    Example::

        live = LiveCurve("digits", display=False)
        for event in job.follow():
            live.feed(event)
        live.close()
        live.figure.savefig("curves.png")
    """

    def __init__(self, title: str | None = None, *, every: float = 1.0, display: bool = True) -> None:
        self.title = title
        self.every = every
        self.events: list[JobEvent] = []
        self.figure: Any = None
        self.draws = 0
        self._last = -math.inf
        self._handle: Any = None
        if display:
            try:
                from IPython import get_ipython  # type: ignore[import-not-found]
                from IPython.display import display as ipy_display  # type: ignore[import-not-found]
            except ImportError:
                return
            if get_ipython() is not None:
                _show_figures_in_ipython()
                self._handle = ipy_display(display_id=True)

    def feed(self, event: JobEvent) -> None:
        """Takes one event; redraws when it is progress and the last drawing is old enough."""
        self.events.append(event)
        if isinstance(event, Progress) and time.monotonic() - self._last >= self.every:
            self._draw()

    def close(self) -> None:
        """Draws the final curves (if there is any progress to draw)."""
        self._draw()

    def _draw(self) -> None:
        df = history_frame(self.events)
        if df.empty:
            return
        self.figure = plot_history(df, checkpoint_epochs(self.events), title=self.title)
        self.draws += 1
        self._last = time.monotonic()
        if self._handle is not None:
            self._handle.update(self.figure)
