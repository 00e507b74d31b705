"""``Balance`` behaves as an amount of credits in a notebook: ``before - grid.balance()``,
``float``, ``format``, comparisons with balances and with numbers, exact to the micro-credit."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from helium_grid import Balance

BEFORE = Balance("researcher", 120_000_000)
AFTER = Balance("researcher", 119_992_973)


def test_subtracting_balances_gives_what_was_spent_exactly() -> None:
    spent = BEFORE - AFTER
    assert spent == Balance("researcher", 7_027)
    assert isinstance(spent, Balance) and spent.micro == 7_027 and spent.principal == "researcher"
    assert AFTER - BEFORE == Balance("researcher", -7_027) == -spent
    assert AFTER + spent == BEFORE


def test_it_reads_as_credits() -> None:
    assert repr(AFTER) == "Balance('researcher', 119.992973 credits)"
    assert str(AFTER) == "researcher: 119.992973 credits"
    assert repr(AFTER - BEFORE) == "Balance('researcher', -0.007027 credits)"
    assert format(AFTER, ".2f") == "119.99" and f"{BEFORE - AFTER:.6f}" == "0.007027"
    assert f"{AFTER}" == str(AFTER)
    assert float(AFTER) == 119.992973 == AFTER.credits
    # Exact beyond float precision: the text comes from the integer.
    assert str(Balance("a", 10**22 + 1)) == "a: 10000000000000000.000001 credits"


def test_numbers_are_credits() -> None:
    assert AFTER + 0.007027 == BEFORE and BEFORE - 0.007027 == AFTER
    assert 120 - AFTER == Balance("researcher", 7_027)
    assert AFTER + Decimal("0.000027") == Balance("researcher", 120_000_000 - 7_000)
    assert (BEFORE + 1).micro == 121_000_000 and (1 + BEFORE).micro == 121_000_000
    assert sum([BEFORE, AFTER]) == Balance("researcher", 239_992_973)
    assert (Balance("a", 0) + 0.0000005).micro == 0  # half-even, as credits_to_micro
    assert (Balance("a", 0) + 0.0000015).micro == 2
    with pytest.raises(TypeError):
        BEFORE + "1"  # type: ignore[operator]
    with pytest.raises(TypeError):
        BEFORE + True  # type: ignore[operator]


def test_comparisons_with_balances_and_numbers() -> None:
    assert AFTER < BEFORE and BEFORE >= AFTER and AFTER <= AFTER and not AFTER > BEFORE
    assert BEFORE == 120 and BEFORE == 120.0 and BEFORE == Decimal("120") and BEFORE == Fraction(120)
    assert AFTER == 119.992973 and AFTER != 119.99297
    assert AFTER > 119.99 and 119.99 < AFTER and AFTER < 120 and 5 <= AFTER
    assert AFTER < float("inf") and AFTER > float("-inf") and AFTER != float("nan")
    assert not (AFTER < float("nan")) and not (AFTER >= float("nan"))
    assert AFTER != "119.992973"
    assert hash(BEFORE) == hash(120) and hash(Balance("researcher", 500_000)) == hash(0.5)
    assert {BEFORE: 1}[Balance("researcher", 120_000_000)] == 1


def test_balances_of_two_principals_do_not_mix() -> None:
    other = Balance("owner", BEFORE.micro)
    assert other != BEFORE
    for op in (
        lambda: BEFORE - other,
        lambda: BEFORE + other,
        lambda: BEFORE < other,
        lambda: BEFORE >= other,
    ):
        with pytest.raises(ValueError, match="'researcher' and 'owner'"):
            op()


def test_int_is_refused_as_ambiguous_and_bool_is_nonzero() -> None:
    with pytest.raises(TypeError, match=r"balance\.micro"):
        int(BEFORE)
    assert BEFORE.micro == 120_000_000 and int(float(BEFORE)) == 120
    assert not Balance("a", 0) and Balance("a", -1) and BEFORE


def test_it_stays_a_frozen_record() -> None:
    with pytest.raises(AttributeError):
        BEFORE.micro = 1  # type: ignore[misc]
    assert Balance.from_wire({"principal": "a", "micro": 7}) == Balance("a", 7)
