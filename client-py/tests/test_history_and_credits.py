"""history_frame / plot_history from synthetic events; credits in reprs and in the progress bar."""

from __future__ import annotations

import io
import math
import time

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from helium_grid import Awarded, Checkpointed, JobState, JobStatus, Progress, StateChanged, WorkerInfo
from helium_grid._history import COLUMNS, checkpoint_epochs, history_frame, plot_history
from helium_grid._progress import Tracker, bar_label
from helium_grid.records import parse_event


def awarded(at: int, worker: str, price: int = 3517) -> Awarded:
    return Awarded("j", at, "awarded", worker=worker, bids=2, price_micro=price, eta_secs=12.5)


def progress(at: int, epoch: int, loss: float, val_loss: float | None = None, acc: float | None = None) -> Progress:
    return Progress("j", at, "progress", epoch=epoch, epochs=3, loss=loss, samples_per_sec=100.0 * epoch,
                    val_loss=val_loss, val_accuracy=acc, step=None if epoch == 3 else 20 * epoch)


EVENTS = [
    StateChanged("j", 1_000, "state", state=JobState.AUCTIONING),
    awarded(2_000, "w1"),
    progress(3_000, 1, 2.0, 2.1, 0.5),
    Checkpointed("j", 3_500, "checkpointed", step=30, epoch=1),
    progress(4_000, 2, 1.0, 1.2, 0.7),
    awarded(5_000, "w2"),  # w1 was lost; the job resumed on w2 from the checkpoint
    progress(6_000, 2, 0.9, 1.1, 0.75),
    progress(7_000, 3, 0.5, 0.8, 0.9),
]


def test_history_has_one_row_per_epoch_with_the_worker_in_force() -> None:
    df = history_frame(EVENTS)
    assert list(df.columns) == list(COLUMNS)
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["loss"].tolist() == [2.0, 0.9, 0.5]  # the re-reported epoch 2 keeps the later report
    assert df["val_loss"].tolist() == [2.1, 1.1, 0.8]
    assert df["val_accuracy"].tolist() == [0.5, 0.75, 0.9]
    assert df["samples_per_sec"].tolist() == [100.0, 200.0, 300.0]
    assert df["worker"].tolist() == ["w1", "w2", "w2"]
    assert df["step"].tolist()[:2] == [20.0, 40.0] and math.isnan(df["step"].tolist()[2])  # absent: NaN
    assert df["time"].tolist() == [pd.Timestamp(ms, unit="ms", tz="UTC") for ms in (3_000, 6_000, 7_000)]
    assert str(df["time"].dt.tz) == "UTC"
    assert checkpoint_epochs(EVENTS) == [1]


def test_history_without_validation_or_progress() -> None:
    df = history_frame([awarded(1, "w1"), progress(2, 1, 1.5)])
    assert math.isnan(df["val_loss"][0]) and math.isnan(df["val_accuracy"][0])
    empty = history_frame([])
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0


def test_checkpointed_events_parse() -> None:
    ev = parse_event({"v": 1, "job_id": "j", "at_ms": 5, "kind": "checkpointed", "step": 40, "epoch": 3})
    assert isinstance(ev, Checkpointed) and (ev.step, ev.epoch, ev.at_ms) == (40, 3, 5)


def test_plot_draws_the_curves() -> None:
    fig = plot_history(history_frame(EVENTS), checkpoint_epochs(EVENTS), title="j")
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["loss"].get_xdata()) == [1, 2, 3]
    assert list(lines["loss"].get_ydata()) == [2.0, 0.9, 0.5]
    assert list(lines["val_loss"].get_ydata()) == [2.1, 1.1, 0.8]
    acc = {line.get_label(): line for line in acc_ax.get_lines()}
    assert list(acc["val_accuracy"].get_ydata()) == [0.5, 0.75, 0.9]
    assert list(lines["checkpoint"].get_xdata()) == [1, 1]  # a vertical line at epoch 1
    fig.savefig(io.BytesIO(), format="png")  # renders with Agg


def test_plot_without_accuracy_has_one_axes() -> None:
    fig = plot_history(history_frame([progress(1, 1, 1.5), progress(2, 2, 1.0)]))
    assert len(fig.axes) == 1
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss"]


def test_reprs_show_credits_not_micro_credits() -> None:
    status = JobStatus("j", "alice", JobState.RUNNING, 3, price_micro=3517, paid_micro=1_200_000)
    text = repr(status)
    assert "price=0.003517 credits" in text and "paid=1.200000 credits" in text
    assert "_micro" not in text and "3517," not in text
    assert status.price_micro == 3517  # the field stays
    assert "price=None" in repr(JobStatus("j", "alice", JobState.QUEUED, 3))
    text = repr(awarded(0, "w1"))
    assert "price=0.003517 credits" in text and "worker='w1'" in text and "_micro" not in text
    w = WorkerInfo("w1", "bob", "cpu", "x86", 0, 1_500_000, 1e8, None, True)
    assert "price_per_hour=1.500000 credits/h" in repr(w) and "_micro" not in repr(w)


def test_bar_label_is_the_name_or_a_short_id() -> None:
    assert bar_label("0193f0c2-8d1e-7c3a", "digits") == "digits"
    assert bar_label("0193f0c2-8d1e-7c3a", None) == "0193f0c2"


def test_bar_shows_the_price_in_credits_and_no_replay_rate(capsys: pytest.CaptureFixture[str]) -> None:
    t = Tracker("0193f0c2", enabled=True, total=3)
    for ev in EVENTS[:3]:  # replayed: old events
        t.feed(ev)
    t.feed(StateChanged("j", 2_500, "state", state=JobState.RUNNING))
    assert t._bar.n == 1
    desc = t._bar.desc
    assert desc.startswith("0193f0c2 running on w1 at 0.003517 credits"), desc
    assert "3517" not in desc.replace("0.003517", "")
    assert "samples/s" not in t._bar.postfix  # an old event: not live
    t.feed(Progress("j", int(time.time() * 1000), "progress", epoch=3, epochs=3, loss=0.5, samples_per_sec=1234.0))
    assert t._bar.n == 3 and "samples/s=1.23e+03" in t._bar.postfix
    line = str(t._bar)
    assert "epoch/s" not in line and "it/s" not in line
    assert line.startswith("0193f0c2 running on w1 at 0.003517 credits: 100%|") and "3/3 epochs" in line, line
    t.close()


def test_live_curve_redraws_at_most_once_a_period_and_at_the_end() -> None:
    from helium_grid._history import LiveCurve

    class Handle:
        def __init__(self) -> None:
            self.shown: list[object] = []

        def update(self, fig: object) -> None:
            self.shown.append(fig)

    live = LiveCurve("digits", every=3600, display=False)
    live._handle = Handle()
    for event in EVENTS:
        live.feed(event)
    assert live.draws == 1, "the first progress draws; the rest wait for the period"
    live.close()
    assert live.draws == 2 and live._handle.shown[-1] is live.figure
    (loss, *_), _ = (live.figure.axes[0].get_lines(), None)
    assert loss.get_ydata().tolist() == [2.0, 0.9, 0.5], "the final curve is the whole history"
    assert live.figure.get_suptitle() == "digits"

    nothing = LiveCurve(display=False)
    nothing.feed(EVENTS[0])
    nothing.close()
    assert nothing.figure is None and nothing.draws == 0, "no progress, no figure"
