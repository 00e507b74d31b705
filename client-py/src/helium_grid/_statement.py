"""An account's statement (``account.statement``) as a pandas DataFrame, what the account
earned and spent, and the matplotlib figure of both over time (``grid.statement()``,
``grid.earnings()``, ``grid.plot_statement()``).

A principal has one account, ``user:<principal>``: a GPU owner's workers are paid into it and
its own jobs are paid out of it. Earned is the sum of ``pay`` postings; spent is what ``hold``
postings took out less what ``refund`` and ``sweep`` postings gave back; their difference is
``net``, the statement's total less the grants.

Example::

    lines = await grid.statement_lines()
    df = statement_frame(lines)
    print(earnings_of("owner-1", lines).net)
    fig = plot_statement(df)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._history import _show_figures_in_ipython
from ._limits import MICRO_PER_CREDIT
from .records import Balance, Earnings, StatementLine

__all__ = ["COLUMNS", "EARNED", "SPENT", "statement_frame", "earnings_of", "break_even_times", "plot_statement"]

#: The columns of ``grid.statement()``, in order.
COLUMNS = (
    "time", "seq", "transfer", "job", "counterparty", "kind",
    "amount", "balance", "amount_micro", "balance_micro", "memo",
)  # fmt: skip

#: Posting kinds that count as earned, and as spent (a refund or sweep counts negatively).
EARNED = ("pay",)
SPENT = ("hold", "refund", "sweep")

_INT64 = (-(2**63), 2**63 - 1)


def _exact(values: list[int]) -> Any:
    """Micro-credit integers as an ``int64`` column when they fit, else as Python ints."""
    import pandas as pd

    fits = all(_INT64[0] <= v <= _INT64[1] for v in values)
    return pd.Series(values, dtype="int64" if fits else "object")


def statement_frame(lines: Iterable[StatementLine]) -> Any:
    """The postings as a ``pandas.DataFrame`` with :data:`COLUMNS`, oldest first: ``time`` is a
    UTC timestamp, ``amount`` and ``balance`` are credits (float, for plots and reading),
    ``amount_micro`` and ``balance_micro`` exact micro-credits (int64; Python ints in an
    object column should one ever pass 2**63).

    Example::

        >>> statement_frame([]).columns.tolist()[:4]
        ['time', 'seq', 'transfer', 'job']
    """
    import pandas as pd

    rows = list(lines)
    df = pd.DataFrame(
        {
            "time": pd.to_datetime(pd.Series([r.time_ms for r in rows], dtype="int64"), unit="ms", utc=True),
            "seq": pd.Series([r.seq for r in rows], dtype="int64"),
            "transfer": pd.Series([r.transfer for r in rows], dtype="object"),
            "job": pd.Series([r.job for r in rows], dtype="object"),
            "counterparty": pd.Series([r.counterparty for r in rows], dtype="object"),
            "kind": pd.Series([r.kind for r in rows], dtype="object"),
            "amount": pd.Series([r.amount_micro / MICRO_PER_CREDIT for r in rows], dtype="float64"),
            "balance": pd.Series([r.balance_micro / MICRO_PER_CREDIT for r in rows], dtype="float64"),
            "amount_micro": _exact([r.amount_micro for r in rows]),
            "balance_micro": _exact([r.balance_micro for r in rows]),
            "memo": pd.Series([r.memo for r in rows], dtype="object"),
        },
        columns=list(COLUMNS),
    )
    return df


def earnings_of(principal: str, lines: Iterable[StatementLine]) -> Earnings:
    """What the postings earned (``pay``), spent (``hold`` less ``refund`` and ``sweep``) and
    were granted, exactly.

    Example::

        >>> line = lambda kind, micro: StatementLine(1, 0, f"{kind}.j.1", "j", "escrow:j", kind, micro, 0)
        >>> e = earnings_of("o", [line("grant", 10), line("pay", 7), line("hold", -5), line("refund", 2)])
        >>> (e.earned.micro, e.spent.micro, e.net.micro, e.granted.micro)
        (7, 3, 4, 10)
    """
    earned = spent = granted = 0
    for line in lines:
        if line.kind in EARNED:
            earned += line.amount_micro
        elif line.kind in SPENT:
            spent -= line.amount_micro
        elif line.kind == "grant":
            granted += line.amount_micro
    return Earnings(Balance(principal, earned), Balance(principal, spent), Balance(principal, granted))


def _cumulative(df: Any) -> tuple[list[int], list[int]]:
    """Cumulative earned and spent micro-credits after each row."""
    earned: list[int] = []
    spent: list[int] = []
    e = s = 0
    for kind, micro in zip(df["kind"], df["amount_micro"]):
        if kind in EARNED:
            e += int(micro)
        elif kind in SPENT:
            s -= int(micro)
        earned.append(e)
        spent.append(s)
    return earned, spent


def break_even_times(df: Any) -> list[Any]:
    """The times at which cumulative earned caught up with cumulative spent (net went from
    below 0 to 0 or above), oldest first.

    Example::

        >>> break_even_times(statement_frame([]))
        []
    """
    earned, spent = _cumulative(df)
    times = list(df["time"])
    out = []
    for i in range(1, len(times)):
        if earned[i - 1] < spent[i - 1] and earned[i] >= spent[i]:
            out.append(times[i])
    return out


def plot_statement(df: Any, *, title: str | None = None) -> Any:
    """An account over time, a ``matplotlib.figure.Figure`` made without pyplot: on top the
    cumulative ``earned`` and ``spent`` credits (steps at each posting) with a dotted
    ``break-even`` line where earned caught up with spent; below, ``net`` (earned − spent)
    against the ``break-even`` level 0, and the ``balance``.

    Example::

        fig = plot_statement(grid.statement())
        fig.savefig("account.png")
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), layout="constrained")
    ax_flow, ax_net = fig.subplots(2, 1, sharex=True)
    times = df["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    earned, spent = _cumulative(df)
    per = float(MICRO_PER_CREDIT)
    steps: dict[str, Any] = {"drawstyle": "steps-post", "marker": "."}
    ax_flow.plot(times, [e / per for e in earned], label="earned", color="tab:green", **steps)
    ax_flow.plot(times, [s / per for s in spent], label="spent", color="tab:red", **steps)
    for i, t in enumerate(break_even_times(df)):
        ax_flow.axvline(t.tz_convert("UTC").tz_localize(None), color="grey", linestyle=":",
                        label="break-even" if i == 0 else None)  # fmt: skip
    ax_flow.set_ylabel("credits")
    ax_flow.set_title("earned and spent")
    ax_net.plot(times, [(e - s) / per for e, s in zip(earned, spent)], label="net", color="tab:blue", **steps)
    ax_net.axhline(0.0, color="grey", linestyle=":", label="break-even")
    # Dashed: an account that was granted nothing has its balance equal to its net.
    ax_net.plot(times, df["balance"].to_numpy(), label="balance", color="tab:purple", linestyle="--", **steps)
    ax_net.set_ylabel("credits")
    ax_net.set_xlabel("time (UTC)")
    ax_net.set_title("net and balance")
    for ax in (ax_flow, ax_net):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    if df.empty:
        ax_flow.text(0.5, 0.5, "no postings", transform=ax_flow.transAxes, ha="center", va="center")
    if title:
        fig.suptitle(title)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()
    ax_net.xaxis.set_major_locator(locator)
    ax_net.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    _show_figures_in_ipython()
    return fig

