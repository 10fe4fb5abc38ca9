"""Expiry selector grammar and semantics (weekly = W flag, monthly = month-end, quarterly = Mar/Jun/Sep/Dec
month-end not taken by an earlier term)."""

from __future__ import annotations

import datetime as dt

import pytest

from tickgate.chains import ExpirySelector, SelectorError
from tickgate.chains.selector import Term
from tickgate.instruments import Expiry, InstrumentRegistry

from .conftest import TODAY


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# A NIFTY-like calendar: weeklies, serial monthlies (Jul/Aug/Sep) and far quarterlies.
CAL = [
    Expiry(d("2026-07-14"), "weekly"),
    Expiry(d("2026-07-21"), "weekly"),
    Expiry(d("2026-07-28"), "monthly"),
    Expiry(d("2026-08-04"), "weekly"),
    Expiry(d("2026-08-25"), "monthly"),
    Expiry(d("2026-09-29"), "monthly"),
    Expiry(d("2026-12-29"), "quarterly"),
    Expiry(d("2027-03-30"), "quarterly"),
]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("next 8 weekly + next 4 quarterly", [Term(8, "weekly"), Term(4, "quarterly")]),
        ("NEXT 1 Monthly+next 3 QUARTERLIES", [Term(1, "monthly"), Term(3, "quarterly")]),
        ("  next   2   expiries ", [Term(2, "expiry")]),
        (
            "next 1 expiry + next 2 weeklies + next 1 monthlies",
            [Term(1, "expiry"), Term(2, "weekly"), Term(1, "monthly")],
        ),
    ],
)
def test_parse(text: str, terms: list[Term]):
    sel = ExpirySelector.parse(text)
    assert list(sel.terms) == terms
    assert ExpirySelector.parse(str(sel)) == sel


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty expiry selector"),
        ("   ", "empty expiry selector"),
        ("next eight weekly", "count must be an integer from 1 to 100"),
        ("next 0 weekly", "count must be an integer"),
        ("next -1 weekly", "count must be an integer"),
        ("next 101 weekly", "count must be an integer"),
        (
            "next 3 fortnightly",
            "unknown expiry class 'fortnightly'; use one of expiry, monthly, quarterly, weekly",
        ),
        ("next 1 weekly +", "term 2 is empty"),
        ("next 1 monthly ++ next 2 quarterly", "term 2 is empty"),
        ("weekly 3", "expected 'next <count> <weekly|monthly|quarterly|expiry>'"),
        ("next 2", "expected 'next <count>"),
        ("next 2 weekly monthly", "expected 'next <count>"),
    ],
)
def test_parse_errors_say_what_is_wrong(text: str, message: str):
    with pytest.raises(SelectorError, match=r"bad|empty") as exc:
        ExpirySelector.parse(text)
    assert message in str(exc.value)
    assert repr(text) in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_weekly_is_the_w_flag_only():
    sel = ExpirySelector.parse("next 3 weekly").select(CAL)
    assert [e.date for e in sel.expiries] == [d("2026-07-14"), d("2026-07-21"), d("2026-08-04")]


def test_monthly_is_any_month_end():
    sel = ExpirySelector.parse("next 5 monthly").select(CAL)
    assert [e.date.month for e in sel.expiries] == [7, 8, 9, 12, 3]


def test_quarterly_is_a_quarter_month_end_not_taken_earlier():
    sel = ExpirySelector.parse("next 3 quarterly").select(CAL)
    # September is a serial monthly for the registry, but it is the next quarter-end expiry
    assert [e.date for e in sel.expiries] == [d("2026-09-29"), d("2026-12-29"), d("2027-03-30")]
    both = ExpirySelector.parse("next 3 monthly + next 2 quarterly").select(CAL)
    assert [e.date for e in both.expiries] == [
        d("2026-07-28"), d("2026-08-25"), d("2026-09-29"), d("2026-12-29"), d("2027-03-30"),
    ]  # fmt: skip
    assert [len(t.found) for t in both.terms] == [3, 2]


def test_shortfall_is_reported_per_term():
    sel = ExpirySelector.parse("next 8 weekly + next 4 quarterly").select(CAL)
    assert (sel.asked, sel.found, sel.shortfall) == (12, 6, 6)
    assert sel.shortfalls() == [
        "next 8 weekly: found 3 of 8 (only 3 weekly expiries listed)",
        "next 4 quarterly: found 3 of 4"
        " (only 3 quarterly expiries listed beyond those taken by earlier terms)",
    ]
    none = ExpirySelector.parse("next 2 weekly").select([e for e in CAL if e.kind != "weekly"])
    assert none.expiries == ()
    assert none.shortfalls() == ["next 2 weekly: found 0 of 2 (no weekly expiries listed)"]
    assert ExpirySelector.parse("next 1 expiry").select([]).shortfall == 1


def test_banknifty_has_no_weeklies_any_more(registry: InstrumentRegistry):
    listed = registry.option_expiries("BANKNIFTY", TODAY)
    sel = ExpirySelector.parse("next 4 weekly + next 1 monthly").select(listed)
    assert next(t.found for t in sel.terms) == ()
    assert [e.date for e in sel.expiries] == [d("2026-07-28")]
    assert sel.shortfalls() == ["next 4 weekly: found 0 of 4 (no weekly expiries listed)"]


def test_nifty_weeklies_skip_the_monthly_tuesday(registry: InstrumentRegistry):
    listed = registry.option_expiries("NIFTY", TODAY)
    sel = ExpirySelector.parse("next 8 weekly").select(listed)
    dates = [e.date for e in sel.expiries]
    assert len(dates) == 8
    assert dates[0] == TODAY
    assert d("2026-07-28") not in dates
    assert all(x.weekday() == 1 for x in dates)
