"""Earnings and spending in one account, on a real grid: a GPU owner's worker is paid into the
owner's account (``user:<owner>``, named by the worker's credential), and the same principal
spends from it as a researcher. Break-even: an owner whose worker earned E and who spent S sees
E − S in its statement (``account.statement``), in ``grid.earnings()`` and in the plot, exactly
to the micro-credit; a researcher cannot read another's statement; the operator's ``helium
jobs`` and ``helium workers`` list the jobs and workers.

The grid: ``w-earner`` (owned by ``gpu-owner``, 4 GiB, the cheaper) and ``w-big`` (owned by
``big-owner``, 32 GiB). A researcher's job (no memory asked) goes to the cheaper ``w-earner``;
the owner's own jobs ask for 16 GiB, so only ``w-big`` can take them: one is cancelled once
awarded (its hold comes back as a refund), one completes (its hold is paid to ``big-owner``).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import helium_grid as hg
import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch
from helium_grid import _subjects

from books import SETTLE_TIMEOUT_S, assert_books_balanced
from conftest import OPERATOR, NatsServer, helium_bin, small_data
from faultjobs import digits, first_event, wide_mlp

pytestmark = pytest.mark.timeout(300)

OWNER, RESEARCHER = "gpu-owner", "researcher-s"
JOB = dict(epochs=2, batch_size=32, lr=1e-2, max_price=5.0, budget=1.0)


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [
        {"worker_id": "w-earner", "owner": OWNER, "price": 1.0, "extra": ("--memory-gb", "4")},
        {"worker_id": "w-big", "owner": "big-owner", "price": 2.0, "extra": ("--memory-gb", "32")},
    ]


def settled(grid: Any, transfers: set[str]) -> list[hg.StatementLine]:
    """The grid's statement once it holds every transfer in ``transfers``: a job's settlement
    reaches the journal shortly after its last event, and publishes nothing a client can await,
    so the statement is asked again until it does (at most ``SETTLE_TIMEOUT_S``)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        lines = grid.statement_lines()
        missing = transfers - {line.transfer for line in lines}
        if not missing:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"{grid.principal}'s statement lacks {sorted(missing)}: {lines}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def books(connect: Callable[[str], Any], operator: Any) -> dict[str, Any]:
    """The researcher's job trained by the owner's worker, then the owner's cancelled and
    completed jobs on the other worker; the figures each side knows."""
    operator.grant(RESEARCHER, 10)
    operator.grant(OWNER, 3)
    researcher, owner = connect(RESEARCHER), connect(OWNER)

    torch.manual_seed(0)
    earned_on = researcher.submit(torch.nn.Linear(64, 10), train=small_data(), **JOB, name="for-hire")
    assert earned_on.wait(timeout=120, progress=False).state is hg.JobState.COMPLETED
    earned_on_status = earned_on.status()
    assert earned_on_status.worker == "w-earner" and earned_on_status.paid_micro > 0
    # Each settlement is journaled before the next job's hold, so the statement's order is fixed.
    settled(owner, {f"pay.{earned_on.id}.1"})

    cancelled = owner.submit(wide_mlp(), train=digits(), epochs=30, batch_size=32, lr=1e-3, max_price=5.0,
                             budget=1.0, min_memory_gb=16, name="own-cancelled")  # fmt: skip
    owner._run(first_event(owner, cancelled.id, lambda e: isinstance(e, hg.Awarded)))
    cancelled.cancel()
    assert cancelled.wait(timeout=120, progress=False).state is hg.JobState.CANCELLED
    settled(owner, {f"refund.{cancelled.id}.1"})

    # More work than the researcher's job (whose ETA is all fixed overhead), so that what the
    # owner spends differs from what it earned.
    completed = owner.submit(wide_mlp(), train=digits(), epochs=1, batch_size=64, lr=1e-3, max_price=5.0, budget=1.0,
                             min_memory_gb=16, name="own")  # fmt: skip
    assert completed.wait(timeout=120, progress=False).state is hg.JobState.COMPLETED

    own = [cancelled.status(), completed.status()]
    assert [s.worker for s in own] == ["w-big", "w-big"]
    lines = settled(owner, {f"pay.{earned_on.id}.1", f"refund.{cancelled.id}.1", f"hold.{completed.id}.1"})
    return {
        "researcher": researcher,
        "owner": owner,
        "earned_on": earned_on_status,
        "own": own,
        "lines": lines,
        # What the owner's worker was paid, and what the owner's jobs paid the other worker.
        "E": earned_on_status.paid_micro,
        "S": sum(s.paid_micro for s in own),
    }


def test_the_owners_statement_shows_the_grant_its_earnings_and_its_spending(books: dict[str, Any]) -> None:
    owner, lines, (cancelled, completed) = books["owner"], books["lines"], books["own"]
    rows = [(line.kind, line.job, line.counterparty) for line in lines]
    job = books["earned_on"].job_id
    assert rows == [
        ("grant", None, "mint"),
        ("pay", job, f"escrow:{job}"),
        ("hold", cancelled.job_id, f"escrow:{cancelled.job_id}"),
        ("refund", cancelled.job_id, f"escrow:{cancelled.job_id}"),
        ("hold", completed.job_id, f"escrow:{completed.job_id}"),
    ], rows
    amounts = [line.amount_micro for line in lines]
    assert amounts[0] == 3_000_000
    assert amounts[1] == books["E"]
    # The cancelled job paid w-big for no checkpoint: its whole hold came back.
    assert cancelled.paid_micro == 0 and amounts[3] == -amounts[2] > 0
    assert -amounts[4] == completed.paid_micro == completed.price_micro
    # Oldest first, each balance the one before plus the amount; the last is the balance now.
    assert [line.seq for line in lines] == sorted(line.seq for line in lines)
    running = 0
    for line in lines:
        running += line.amount_micro
        assert line.balance_micro == running
    assert lines[-1].balance_micro == owner.balance().micro

    df = owner.statement()
    assert list(df.columns) == [
        "time", "seq", "transfer", "job", "counterparty", "kind",
        "amount", "balance", "amount_micro", "balance_micro", "memo",
    ]  # fmt: skip
    assert df["transfer"].tolist() == [line.transfer for line in lines]
    assert df["amount_micro"].tolist() == amounts
    assert df["balance_micro"].iloc[-1] == owner.balance().micro
    assert df["amount"].tolist() == [a / 1e6 for a in amounts]
    assert df["time"].is_monotonic_increasing and str(df["time"].dt.tz) == "UTC"
    assert (df["time"] >= pd.Timestamp(books["earned_on"].created_ms, unit="ms", tz="UTC")).iloc[1:].all()
    # Only what came after a seen entry.
    later = owner.statement(since_seq=lines[1].seq)
    assert later["transfer"].tolist() == [line.transfer for line in lines[2:]]


def test_break_even_an_owner_that_earned_e_and_spent_s_sees_e_minus_s(books: dict[str, Any]) -> None:
    owner, E, S = books["owner"], books["E"], books["S"]
    assert 0 < E != S > 0
    e = owner.earnings()
    assert (e.earned.micro, e.spent.micro, e.net.micro, e.granted.micro) == (E, S, E - S, 3_000_000)
    assert e.net == hg.Balance(OWNER, E - S)
    df = owner.statement()
    assert int(df.loc[df["kind"] != "grant", "amount_micro"].sum()) == E - S
    assert owner.balance().micro == 3_000_000 + E - S

    fig = owner.plot_statement()
    assert isinstance(fig, matplotlib.figure.Figure)
    flow, net = fig.axes
    drawn = {line.get_label(): list(line.get_ydata()) for line in [*flow.get_lines(), *net.get_lines()]}
    assert drawn["earned"] == pytest.approx([0, E / 1e6, E / 1e6, E / 1e6, E / 1e6])
    spent_after = [0, 0, -df["amount_micro"][2], -df["amount_micro"][2] - df["amount_micro"][3], S]
    assert drawn["spent"] == pytest.approx([s / 1e6 for s in spent_after])
    assert drawn["net"][-1] == pytest.approx((E - S) / 1e6)
    assert drawn["balance"] == df["balance"].tolist()
    assert drawn["break-even"] == [0.0, 0.0]


def test_the_researcher_sees_only_its_own_account(books: dict[str, Any]) -> None:
    researcher = books["researcher"]
    lines = researcher.statement_lines()
    job = books["earned_on"]
    assert [line.kind for line in lines] == ["grant", "hold"]
    assert lines[1].amount_micro == -job.paid_micro and lines[1].job == job.job_id
    assert lines[-1].balance_micro == researcher.balance().micro
    e = researcher.earnings()
    assert (e.earned.micro, e.spent.micro) == (0, job.paid_micro)
    # Another's statement: nats-server refuses the subject (and the broker answers only into
    # the caller's own inbox).
    researcher._async.principal = OWNER
    try:
        with pytest.raises(hg.Unauthorized, match=f"helium.v1.api.{OWNER}.account.statement"):
            researcher.statement()
    finally:
        researcher._async.principal = RESEARCHER


def test_statement_pages_are_bounded_and_resume_from_a_seq(books: dict[str, Any]) -> None:
    owner, lines = books["owner"], books["lines"]

    def read(**fields: Any) -> Any:
        return owner._run(owner._async._read(_subjects.ACCOUNT_STATEMENT, fields))

    first = read(since_seq=0, limit=1)
    assert [m["transfer"] for m in first["lines"]] == [lines[0].transfer] and first["more"] is True
    assert hg.StatementLine.from_wire(first["lines"][0]) == lines[0]
    assert read(since_seq=lines[-1].seq, limit=1) == {
        "principal": OWNER, "lines": [], "more": False, "balance": first["balance"],
    }  # fmt: skip
    with pytest.raises(hg.BadRequest, match="limit"):
        read(since_seq=0, limit=0)


def helium(nats: NatsServer, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(helium_bin("helium")), *args, "--nats", nats.url, "--creds", str(nats.principal_creds(OPERATOR))]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_operator_lists_jobs_and_workers(books: dict[str, Any], nats_server: NatsServer) -> None:
    job, (cancelled, completed) = books["earned_on"], books["own"]
    listed = helium(nats_server, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["job_id"]: j for j in json.loads(listed.stdout)}
    assert {job.job_id, cancelled.job_id, completed.job_id} <= set(jobs)
    seen = jobs[job.job_id]
    assert (seen["principal"], seen["state"], seen["worker"], seen["paid"]) == (
        RESEARCHER, "completed", "w-earner", job.paid_micro,
    )  # fmt: skip
    assert (jobs[cancelled.job_id]["state"], jobs[cancelled.job_id]["reason_code"]) == ("cancelled", "cancelled")
    assert jobs[completed.job_id]["epochs_done"] == jobs[completed.job_id]["epochs"] == 1

    mine = helium(nats_server, "jobs", "--principal", OWNER, "--json")
    assert mine.returncode == 0, mine.stderr
    assert [j["job_id"] for j in json.loads(mine.stdout)] == [cancelled.job_id, completed.job_id]
    table = helium(nats_server, "jobs", "--principal", OWNER)
    assert table.returncode == 0, table.stderr
    head, *rows = table.stdout.splitlines()
    assert head.split() == ["JOB", "PRINCIPAL", "NAME", "STATE", "REASON", "WORKER", "PRICE", "PAID", "EPOCHS"]
    assert [r.split()[:4] for r in rows] == [
        [cancelled.job_id, OWNER, "own-cancelled", "cancelled"],
        [completed.job_id, OWNER, "own", "completed"],
    ]
    assert rows[1].split()[-1] == "1/1"

    workers = helium(nats_server, "workers", "--json")
    assert workers.returncode == 0, workers.stderr
    by_id = {w["worker_id"]: w for w in json.loads(workers.stdout)}
    assert (by_id["w-earner"]["owner"], by_id["w-big"]["owner"]) == (OWNER, "big-owner")
    assert (by_id["w-earner"]["memory_bytes"], by_id["w-big"]["memory_bytes"]) == (4 << 30, 32 << 30)
    assert by_id["w-earner"]["price_per_hour_credits"] == 1.0 and by_id["w-earner"]["alive"] is True
    table = helium(nats_server, "workers")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert rows["w-earner"][1] == OWNER and rows["w-big"][1] == "big-owner"
    assert "2.000000" in rows["w-big"]

    # A researcher's credential may not read the job bucket.
    snoop = subprocess.run(
        [str(helium_bin("helium")), "jobs", "--nats", nats_server.url, "--creds", str(nats_server.principal_creds(RESEARCHER))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert snoop.returncode == 2, snoop.stdout


def test_the_books_balance(books: dict[str, Any], nats_server: NatsServer) -> None:
    assert_books_balanced(nats_server)
