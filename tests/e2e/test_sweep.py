"""Burst, through the real grid: a sweep of 8 jobs on 8 workers. Every job trains at once
(their training intervals overlap), each result is the trained model of its own point, the
combined ``wait_all`` returns one row per job with its parameters, and the money balances: the
researcher paid exactly what the jobs say, and that is exactly what the owners earned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch

from books import assert_books_balanced
from faultjobs import digits

pytestmark = pytest.mark.timeout(600)

WORKERS = 8


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": f"w-{i}", "owner": f"owner-{i}", "price": 1.0 + i / 10, "throughput": 1e9}
        for i in range(WORKERS)
    ]


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))  # fmt: skip


def training_interval(job: hg.Job) -> tuple[int, int]:
    """From the job's first ``running`` event to its ``completed`` one (unix ms)."""
    events = job.events()
    start = next(e.at_ms for e in events if isinstance(e, hg.StateChanged) and e.state is hg.JobState.RUNNING)
    end = next(e.at_ms for e in events if isinstance(e, hg.StateChanged) and e.state is hg.JobState.COMPLETED)
    return start, end


def test_a_sweep_of_8_jobs_runs_on_8_workers_at_once_and_the_money_balances(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any], nats_server: Any
) -> None:
    operator.grant("sam", 50)
    sam = connect("sam")
    before = sam.balance().micro
    x, y = digits()

    jobs = sam.sweep(mlp(), train=(x, y), epochs=6, batch_size=32, lr=[1e-3, 3e-3], weight_decay=[0.0, 1e-4],
                     seed=[0, 1], max_price=10, budget=2, name="mlp")  # fmt: skip
    assert len(jobs) == 8
    assert jobs[0].name == "mlp[lr=0.001,weight_decay=0.0,seed=0]"
    assert jobs[0].params == {"lr": 1e-3, "weight_decay": 0.0, "seed": 0}

    df = hg.wait_all(jobs, timeout=500, progress=False)
    assert list(df.state) == ["completed"] * 8, df[["name", "state", "reason"]]
    assert list(df.lr) == [j.params["lr"] for j in jobs] and list(df.seed) == [j.params["seed"] for j in jobs]
    assert df.worker.nunique() == 8, f"the jobs did not spread over the workers: {df.worker.tolist()}"

    intervals = [training_interval(j) for j in jobs]
    latest_start, earliest_end = max(s for s, _ in intervals), min(e for _, e in intervals)
    assert latest_start < earliest_end, f"not all 8 trained at once: {intervals}"

    for job in jobs:
        with torch.no_grad():
            accuracy = (job.result()(x).argmax(1) == y).float().mean().item()
        assert accuracy > 0.9, (job.name, accuracy)
    # Different points train different models.
    first, second = (jobs[i].result().state_dict() for i in (0, 1))
    assert any(not torch.equal(first[k], second[k]) for k in first)

    paid = sum(j.status().paid_micro for j in jobs)
    assert paid == round(df.paid.sum() * 1_000_000)
    assert before - sam.balance().micro == paid, "the researcher paid other than the jobs say"
    earned = sum(connect(f"owner-{i}").balance().micro for i in range(WORKERS))
    assert earned == paid, "the owners earned other than the researcher paid"
    assert_books_balanced(nats_server)


def test_submit_many_refuses_what_the_balance_cannot_cover_before_any_upload(
    connect: Callable[[str], Any], operator: Any
) -> None:
    operator.grant("tess", 1)
    tess = connect("tess")
    x, y = digits()
    spec = dict(model=torch.nn.Linear(64, 10), train=(x, y), epochs=1, batch_size=32, max_price=10, budget=0.6)
    with pytest.raises(hg.InsufficientFunds, match="2 budgets"):
        tess.submit_many([spec, spec])
    assert tess.jobs() == [] and tess.balance().micro == 1_000_000
    with pytest.raises(hg.BadRequest, match="needs at least one argument given as a list"):
        tess.sweep(torch.nn.Linear(64, 10), train=(x, y), epochs=1, batch_size=32, max_price=10, budget=0.1)
