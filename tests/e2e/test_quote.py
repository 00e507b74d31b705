"""A price before committing, through the real grid: ``grid.quote`` returns the auction's price
on the current asks without submitting, uploading or holding anything, and a job submitted
right after, on the same market, is charged inside the quoted range (here exactly the quoted
price, since every invited worker is free and bids its ask)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import helium_grid as hg
import pytest
import torch

from faultjobs import digits

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-cheap", "owner": "owner-cheap", "price": 1.0, "throughput": 2e8},
        {"worker_id": "w-mid", "owner": "owner-mid", "price": 2.0, "throughput": 2e8},
        {"worker_id": "w-fast", "owner": "owner-fast", "price": 3.0, "throughput": 1e9},
    ]


def job_kwargs() -> dict[str, Any]:
    return dict(train=digits(), epochs=3, batch_size=32, lr=1e-2, max_price=10, budget=5)


def test_a_quote_holds_nothing_and_the_next_job_is_charged_inside_it(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any]
) -> None:
    operator.grant("quinn", 10)
    quinn = connect("quinn")
    before, jobs_before = quinn.balance().micro, quinn.jobs()
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)

    q = quinn.quote(model, **job_kwargs())
    assert q.available and q.reason is None, q
    assert q.invited == 3 and q.qualifying == 3, q
    assert q.low_micro <= q.price_micro <= q.high_micro
    # The cheapest ask wins; the second price is the next owner's cost.
    assert q.worker == "w-cheap"
    assert q.eta_low_secs <= q.eta_secs <= q.eta_high_secs
    assert quinn.balance().micro == before and quinn.jobs() == jobs_before, "a quote held or submitted something"

    job = quinn.submit(model, **job_kwargs())
    final = job.wait(progress=False, timeout=240)
    assert final.state is hg.JobState.COMPLETED
    awarded = next(e for e in job.events() if isinstance(e, hg.Awarded))
    assert awarded.worker == q.worker
    assert q.low_micro <= awarded.price_micro <= q.high_micro, (awarded, q)
    assert awarded.price_micro == q.price_micro, "every invited worker was free and bid its ask"
    assert abs(awarded.eta_secs - q.eta_secs) < 1e-6


def test_a_job_no_worker_can_take_gets_a_reason_not_a_price(connect: Callable[[str], Any], operator: Any) -> None:
    quinn = connect("quinn")
    q = quinn.quote(torch.nn.Linear(64, 10), **{**job_kwargs(), "min_memory_gb": 100_000})
    assert not q.available and q.reason and q.price_micro == 0, q
    # Over the budget: the reason names it.
    q = quinn.quote(torch.nn.Linear(64, 10), **{**job_kwargs(), "budget": 0.000001})
    assert not q.available and "budget" in (q.reason or ""), q


def test_a_bad_quote_is_refused_before_anything_is_sent(connect: Callable[[str], Any]) -> None:
    quinn = connect("quinn")
    with pytest.raises(hg.BadRequest, match="unknown arguments: learning_rate"):
        quinn.quote(torch.nn.Linear(64, 10), **job_kwargs(), learning_rate=0.1)
    with pytest.raises(hg.BadRequest, match="max_price"):
        quinn.quote(torch.nn.Linear(64, 10), **{**job_kwargs(), "max_price": 0})
