"""job.history() and job.plot() on a real grid: the DataFrame and the curves are the job's own
progress events (loss, validation metrics, the awarded worker, the time), and the async twin
returns the same frame."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

pytestmark = pytest.mark.timeout(300)

EPOCHS = 6


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": "w-hist", "owner": "owner-hist", "price": 1.0}]


@pytest.fixture(scope="module")
def finished_job(connect: Callable[[str], Any], operator: Any) -> Any:
    operator.grant("historian", 20)
    grid = connect("historian")
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    job = grid.submit(
        model, train=(x[:1400], y[:1400]), validation=(x[1400:], y[1400:]), epochs=EPOCHS, batch_size=64,
        lr=1e-2, max_price=5, budget=2, name="history", checkpoint_every=20,
    )  # fmt: skip
    final = job.wait(timeout=240, progress=False)
    assert final.state is hg.JobState.COMPLETED
    return job


def test_history_is_the_progress_events(finished_job: Any, nats_server: Any) -> None:
    events = finished_job.events()
    progress = [e for e in events if isinstance(e, hg.Progress)]
    (award,) = [e for e in events if isinstance(e, hg.Awarded)]
    assert len(progress) == EPOCHS

    df = finished_job.history()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "epoch", "step", "loss", "val_loss", "val_accuracy", "samples_per_sec", "worker", "time",
    ]  # fmt: skip
    assert df["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert df["loss"].tolist() == [e.loss for e in progress]
    assert df["val_loss"].tolist() == [e.val_loss for e in progress]
    assert df["val_accuracy"].tolist() == [e.val_accuracy for e in progress]
    assert all(0 <= a <= 1 for a in df["val_accuracy"])
    assert df["samples_per_sec"].tolist() == [e.samples_per_sec for e in progress]
    assert df["worker"].tolist() == [award.worker] * EPOCHS == ["w-hist"] * EPOCHS
    assert df["time"].tolist() == [pd.Timestamp(e.at_ms, unit="ms", tz="UTC") for e in progress]
    assert df["time"].is_monotonic_increasing
    # 1,400 rows in batches of 64: 22 steps an epoch.
    assert df["step"].tolist() == [e.step for e in progress] == [22 * k for k in range(1, EPOCHS + 1)]

    # The broker verified checkpoints (every 20 steps), and they parse as records.
    checkpoints = [e for e in events if isinstance(e, hg.Checkpointed)]
    assert checkpoints and all(c.step > 0 and 0 <= c.epoch <= EPOCHS for c in checkpoints)

    # The async twin reads the same events.
    async def via_async() -> pd.DataFrame:
        async with await hg.AsyncGrid.connect(nats_server.url, creds=nats_server.principal_creds("historian")) as grid:
            return await grid.job(finished_job.id).history()

    pd.testing.assert_frame_equal(asyncio.run(via_async()), df)


def test_plot_draws_the_jobs_curves(finished_job: Any) -> None:
    df = finished_job.history()
    fig = finished_job.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert list(lines["loss"].get_xdata()) == df["epoch"].tolist()
    assert list(lines["loss"].get_ydata()) == df["loss"].tolist()
    assert list(lines["val_loss"].get_ydata()) == df["val_loss"].tolist()
    (acc,) = [line for line in acc_ax.get_lines() if line.get_label() == "val_accuracy"]
    assert list(acc.get_ydata()) == df["val_accuracy"].tolist()
    assert "checkpoint" in lines  # the verified checkpoints, as dotted lines
