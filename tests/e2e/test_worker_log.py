"""The owner sees why, through the real grid: after an auction, the losing worker's owner reads
in ``grid.worker_log`` that it was outbid, at which price against its own; the winner's owner
reads that it won and what it was paid; ``grid.workers()`` shows each worker's wins, losses,
completed jobs and reputation. Nobody else reads a worker's log."""

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
    # The same throughput: the ETAs tie and the prices decide.
    return [
        {"worker_id": "w-cheap", "owner": "olga", "price": 1.0, "throughput": 2e8},
        {"worker_id": "w-dear", "owner": "dmitri", "price": 1.5, "throughput": 2e8},
    ]


def test_the_loser_reads_that_it_was_outbid_and_at_what_price(
    connect: Callable[[str], Any], operator: Any, workers: dict[str, Any]
) -> None:
    operator.grant("rita", 10)
    rita = connect("rita")
    torch.manual_seed(0)
    job = rita.submit(torch.nn.Linear(64, 10), train=digits(), epochs=2, batch_size=32, lr=1e-2, max_price=10, budget=5)
    assert job.wait(progress=False, timeout=240).state is hg.JobState.COMPLETED
    awarded = next(e for e in job.events() if isinstance(e, hg.Awarded))
    assert awarded.worker == "w-cheap"

    lost = connect("dmitri").worker_log("w-dear")
    row = lost[lost.job == job.id].iloc[-1]
    assert row.verdict == "lost", lost
    assert row.reason.startswith("outbid: 1.000000 against your 1.500000 credits/h"), row.reason
    assert row.price_per_hour == 1.5 and row.winning_price_per_hour == 1.0
    assert row.winning_cost < row.cost
    # The winner's cost is what the second price is not below; the loser's is what was paid.
    assert abs(awarded.price - row.cost) < 1e-6, (awarded, row)

    won = connect("olga").worker_log("w-cheap")
    row = won[won.job == job.id].iloc[-1]
    assert row.verdict == "won" and row.reason.startswith("won: paid"), won
    assert row.winning_price_per_hour != row.winning_price_per_hour  # NaN: a winner hears nothing of others

    # Everyone sees each worker's reputation; only its owner its auction record.
    views = {w.worker_id: w for w in rita.workers()}
    cheap, dear = views["w-cheap"], views["w-dear"]
    assert (cheap.completed, cheap.failed, cheap.reputation) == (1, 0, 1.0), cheap
    assert (dear.won, dear.lost, dear.declined, dear.last_auction) == (None, None, None, None), dear
    cheap = next(w for w in connect("olga").workers() if w.worker_id == "w-cheap")
    dear = next(w for w in connect("dmitri").workers() if w.worker_id == "w-dear")
    assert cheap.won >= 1 and dear.lost >= 1 and dear.won == 0, (cheap, dear)
    assert dear.last_auction is not None and dear.last_auction.startswith(f"lost job {job.id}: outbid"), dear


def test_only_the_owner_reads_a_workers_log(connect: Callable[[str], Any], workers: dict[str, Any]) -> None:
    with pytest.raises(hg.Unauthorized, match="only its owner"):
        connect("rita").worker_log("w-dear")
    with pytest.raises(hg.NotFound):
        connect("dmitri").worker_log("w-nobody")
    with pytest.raises(ValueError):
        connect("dmitri").worker_log("w-dear", limit=-1)
    assert len(connect("dmitri").worker_log("w-dear", limit=1)) == 1
