"""A worker's auction notes as a pandas DataFrame (``grid.worker_log(worker_id)``): one row per
invitation, oldest first, with the verdict, the reason in words, and the bids in credits.

Example::

    df = notes_frame(notes)
    df[df.verdict == "lost"][["job", "reason"]]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._limits import micro_to_credits
from .records import AuctionNote

__all__ = ["NOTE_COLUMNS", "notes_frame"]

#: The columns of ``grid.worker_log()``, in order.
NOTE_COLUMNS = (
    "time",
    "job",
    "verdict",
    "reason",
    "price_per_hour",
    "cost",
    "winning_price_per_hour",
    "winning_cost",
)


def _credits(micro: int | None) -> float:
    return float("nan") if micro is None else micro_to_credits(micro)


def notes_frame(notes: Iterable[AuctionNote]) -> Any:
    """``notes`` as a DataFrame with :data:`NOTE_COLUMNS`: ``time`` a UTC timestamp, money in
    credits (``NaN`` where a note has none: a decline carries no bid).

    Example::

        notes_frame([AuctionNote("j", 0, "declined", "busy with j0")]).verdict.tolist() == ["declined"]
    """
    import pandas as pd

    rows = [
        {
            "time": pd.Timestamp(n.at_ms, unit="ms", tz="UTC"),
            "job": n.job_id,
            "verdict": n.verdict,
            "reason": n.reason,
            "price_per_hour": _credits(n.price_per_hour_micro),
            "cost": _credits(n.cost_micro),
            "winning_price_per_hour": _credits(n.winning_price_per_hour_micro),
            "winning_cost": _credits(n.winning_cost_micro),
        }
        for n in notes
    ]
    return pd.DataFrame(rows, columns=list(NOTE_COLUMNS))
