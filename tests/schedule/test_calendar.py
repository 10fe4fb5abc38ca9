"""Trading calendar: shipped holidays, per-exchange sessions, the MCX US-DST close, coverage."""

from __future__ import annotations

import datetime as dt
import tomllib
from importlib import resources

import pytest

import pinned
from tickgate.schedule.calendar import (
    IST,
    CalendarWarning,
    TradingCalendar,
    contract_close,
    mcx_close_time,
    us_dst_in_effect,
)


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return TradingCalendar.load()


def _data() -> dict[str, object]:
    return tomllib.loads(resources.files("tickgate.data").joinpath("holidays.toml").read_text())


def test_the_suite_s_year_is_covered_by_official_data(calendar: TradingCalendar) -> None:
    """The year the suite's clock is in has the exchanges' circulars in holidays.toml. (It used to read the
    host's date, which would fail every submission from 1 January until someone added the new year's list;
    a year past the list is the calendar's loud warning at run time, tested below with 2031.)"""
    year = pinned.TODAY.year
    for exchange in ("NSE", "BSE", "MCX"):
        assert year in calendar.covered_years(exchange), f"{exchange} holidays for {year} missing"


def test_every_listed_nse_holiday_is_closed(calendar: TradingCalendar) -> None:
    nse = _data()["NSE"]
    assert isinstance(nse, dict)
    for entries in nse.values():
        for entry in entries:
            assert not calendar.is_trading_day("NSE", entry["date"])
            assert calendar.session_close("NSE", entry["date"]) is None


def test_weekends_and_ordinary_days(calendar: TradingCalendar) -> None:
    assert not calendar.is_trading_day("NSE", dt.date(2026, 11, 28))  # Saturday
    assert calendar.is_trading_day("NSE", dt.date(2026, 11, 25))
    assert calendar.session_close("BSE", dt.date(2026, 11, 25)) == dt.datetime(
        2026, 11, 25, 15, 30, tzinfo=IST
    )


def test_mcx_trades_the_evening_of_an_nse_holiday(calendar: TradingCalendar) -> None:
    guru_nanak = dt.date(2026, 11, 24)
    assert not calendar.is_trading_day("NSE", guru_nanak)
    assert calendar.is_trading_day("MCX", guru_nanak)
    assert calendar.session_open("MCX", guru_nanak) == dt.datetime(2026, 11, 24, 17, 0, tzinfo=IST)
    assert calendar.session_close("MCX", guru_nanak) == dt.datetime(2026, 11, 24, 23, 55, tzinfo=IST)
    christmas = dt.date(2026, 12, 25)
    assert not calendar.is_trading_day("MCX", christmas)
    new_year = dt.date(2026, 1, 1)  # morning only
    assert calendar.session_close("MCX", new_year) == dt.datetime(2026, 1, 1, 17, 0, tzinfo=IST)


@pytest.mark.parametrize(
    ("day", "close"),
    [
        (dt.date(2026, 3, 6), dt.time(23, 55)),  # before US DST starts (8 Mar 2026)
        (dt.date(2026, 3, 9), dt.time(23, 30)),  # US DST on
        (dt.date(2026, 10, 30), dt.time(23, 30)),
        (dt.date(2026, 11, 2), dt.time(23, 55)),  # US DST ended 1 Nov 2026
    ],
)
def test_mcx_close_follows_us_daylight_saving(day: dt.date, close: dt.time) -> None:
    assert mcx_close_time(day) == close
    assert us_dst_in_effect(day) == (close == dt.time(23, 30))
    assert contract_close(day, "MCX") == dt.datetime.combine(day, close, IST)


def test_contracts_stop_at_their_segment_s_close() -> None:
    """Equity and index derivatives at 15:30, currency ones at 17:00 (whatever exchange lists them)."""
    day = dt.date(2026, 3, 10)
    assert contract_close(day, "NSE").time() == dt.time(15, 30)
    assert contract_close(day, "BSE").time() == dt.time(15, 30)
    assert contract_close(day, "NSE", currency=True).time() == dt.time(17, 0)
    assert contract_close(day, "CUR").time() == dt.time(17, 0)


def test_is_open_and_last_close(calendar: TradingCalendar) -> None:
    wed_10am = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)
    assert calendar.is_open("NSE", wed_10am)
    assert not calendar.is_open("NSE", wed_10am.replace(hour=16))
    assert calendar.is_open("MCX", wed_10am.replace(hour=22))
    # the NSE close before Wednesday morning skips Tuesday's holiday
    assert calendar.last_close_before("NSE", wed_10am) == dt.datetime(2026, 11, 23, 15, 30, tzinfo=IST)
    assert calendar.last_close_before("MCX", wed_10am) == dt.datetime(2026, 11, 24, 23, 55, tzinfo=IST)


def test_uncovered_year_falls_back_loudly(calendar: TradingCalendar) -> None:
    fresh = TradingCalendar.load()
    with pytest.warns(CalendarWarning, match="no official holiday list for 2031"):
        assert not fresh.is_trading_day("NSE", dt.date(2031, 4, 11))  # Good Friday, from the estimate
    assert fresh.is_trading_day("NSE", dt.date(2031, 4, 10))
    assert fresh.is_trading_day("MCX", dt.date(2031, 4, 11))  # the estimate assumes MCX's evening session


def test_bad_data_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad holiday date"):
        TradingCalendar.parse({"NSE": {"2026": [{"date": dt.date(2025, 1, 1), "name": "x"}]}})
