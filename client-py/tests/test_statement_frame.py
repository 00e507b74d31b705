"""statement_frame / earnings_of / plot_statement from synthetic statement lines, and the lines'
wire form (i128 amounts as 16-byte bin)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from helium_grid import Balance, Earnings, StatementLine
from helium_grid._statement import COLUMNS, break_even_times, earnings_of, plot_statement, statement_frame
from helium_grid.errors import ProtocolError


def i128(n: int) -> bytes:
    return n.to_bytes(16, "big", signed=True)


def line(seq: int, kind: str, micro: int, balance: int, job: str | None = "j1") -> StatementLine:
    counterparty = "mint" if kind == "grant" else f"escrow:{job}"
    transfer = f"grant.g{seq}" if kind == "grant" else f"{kind}.{job}.1"
    return StatementLine(seq, 1_000 * seq, transfer, job, counterparty, kind, micro, balance)


#: An owner granted 1 credit, paid 0.7 for an award of a researcher's job, then spending on its
#: own job (hold 1.2, refund 0.3) and earning 0.5 more: spent 0.9 first outruns earned 0.7,
#: then earned 1.2 catches up.
LINES = [
    line(1, "grant", 1_000_000, 1_000_000, job=None),
    line(3, "pay", 700_000, 1_700_000, job="r1"),
    line(4, "hold", -1_200_000, 500_000, job="own"),
    line(6, "refund", 300_000, 800_000, job="own"),
    line(7, "pay", 500_000, 1_300_000, job="r2"),
]


def test_lines_read_their_wire_form() -> None:
    wire = {
        "seq": 4, "time_ms": 1_765_000_000_123, "transfer": "hold.own.1", "job": "own",
        "counterparty": "escrow:own", "kind": "hold", "micro": i128(-1_200_000), "balance": i128(500_000),
        "memo": "award 1",
    }  # fmt: skip
    got = StatementLine.from_wire(wire)
    assert (got.amount_micro, got.balance_micro, got.amount, got.balance) == (-1_200_000, 500_000, -1.2, 0.5)
    assert got.time == pd.Timestamp(1_765_000_000_123, unit="ms", tz="UTC")
    assert "amount=-1.200000 credits" in repr(got)
    assert StatementLine.from_wire({**wire, "job": None, "micro": 5}).job is None
    with pytest.raises(ProtocolError):
        StatementLine.from_wire({k: v for k, v in wire.items() if k != "balance"})


def test_the_frame_has_one_row_per_line_with_exact_and_float_money() -> None:
    df = statement_frame(LINES)
    assert list(df.columns) == list(COLUMNS)
    assert df["kind"].tolist() == ["grant", "pay", "hold", "refund", "pay"]
    assert df["amount_micro"].tolist() == [1_000_000, 700_000, -1_200_000, 300_000, 500_000]
    assert df["amount_micro"].dtype == "int64" and df["balance_micro"].dtype == "int64"
    assert df["balance"].tolist() == [1.0, 1.7, 0.5, 0.8, 1.3]
    assert df["time"].tolist() == [pd.Timestamp(1_000 * s, unit="ms", tz="UTC") for s in (1, 3, 4, 6, 7)]
    assert df["job"].tolist() == [None, "r1", "own", "own", "r2"]
    assert statement_frame([]).columns.tolist() == list(COLUMNS)
    # Beyond int64 the exact columns keep Python ints.
    huge = statement_frame([line(1, "grant", 2**70, 2**70, job=None)])
    assert huge["amount_micro"].tolist() == [2**70] and huge["amount_micro"].dtype == object


def test_earnings_are_pays_in_and_holds_less_refunds_out() -> None:
    e = earnings_of("owner", LINES)
    assert isinstance(e, Earnings)
    assert (e.earned.micro, e.spent.micro, e.granted.micro, e.net.micro) == (1_200_000, 900_000, 1_000_000, 300_000)
    assert e.net == Balance("owner", 300_000) and e.principal == "owner"
    # Granted plus net is the last balance.
    assert e.granted.micro + e.net.micro == LINES[-1].balance_micro
    sweep = earnings_of("owner", [*LINES, line(8, "sweep", 100_000, 1_400_000, job="own")])
    assert sweep.spent.micro == 800_000


def test_the_plot_draws_cumulative_earned_and_spent_net_and_balance() -> None:
    df = statement_frame(LINES)
    fig = plot_statement(df, title="owner")
    assert isinstance(fig, matplotlib.figure.Figure)
    flow, net = fig.axes
    lines = {ln.get_label(): ln for ln in flow.get_lines()}
    assert list(lines["earned"].get_ydata()) == [0.0, 0.7, 0.7, 0.7, 1.2]
    assert list(lines["spent"].get_ydata()) == [0.0, 0.0, 1.2, 0.9, 0.9]
    # Earned (0.7) fell behind spent (0.9) and caught up at seq 7.
    assert break_even_times(df) == [pd.Timestamp(7_000, unit="ms", tz="UTC")]
    assert "break-even" in lines
    below = {ln.get_label(): ln for ln in net.get_lines()}
    assert [round(y, 6) for y in below["net"].get_ydata()] == [0.0, 0.7, -0.5, -0.2, 0.3]
    assert list(below["break-even"].get_ydata()) == [0.0, 0.0]
    assert list(below["balance"].get_ydata()) == [1.0, 1.7, 0.5, 0.8, 1.3]
    assert len(below["balance"].get_xdata()) == len(df)
    # An empty statement still plots.
    assert plot_statement(statement_frame([])).axes
