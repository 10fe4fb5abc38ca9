"""Market phases per segment, from the trading calendar: what the simulator's silence and the client's
watchdog both follow."""

from __future__ import annotations

import datetime as dt

import pytest

from tickgate.clock import IST
from tickgate.dhan.protocol import ExchangeSegment
from tickgate.schedule.calendar import TradingCalendar
from tickgate.schedule.sessions import MarketSessions, market_of


@pytest.fixture(scope="module")
def sessions() -> MarketSessions:
    return MarketSessions(TradingCalendar.load())


def at(day: dt.date, hh: int, mm: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm), tzinfo=IST)


WEDNESDAY = dt.date(2026, 11, 25)
HOLI = dt.date(2026, 3, 3)  # NSE and BSE closed; MCX evening session only
SATURDAY = dt.date(2026, 11, 28)


@pytest.mark.parametrize(
    ("hhmm", "nse", "mcx", "cds"),
    [
        ((8, 59), "closed", "closed", "closed"),
        ((9, 0), "pre_open", "continuous", "continuous"),
        ((9, 14), "pre_open", "continuous", "continuous"),
        ((9, 15), "continuous", "continuous", "continuous"),
        ((15, 29), "continuous", "continuous", "continuous"),
        ((15, 30), "closed", "continuous", "continuous"),
        ((17, 0), "closed", "continuous", "closed"),
        ((23, 29), "closed", "continuous", "closed"),
        ((23, 45), "closed", "continuous", "closed"),  # November: US standard time, MCX trades to 23:55
        ((23, 55), "closed", "closed", "closed"),
    ],
)
def test_a_normal_day(sessions: MarketSessions, hhmm: tuple[int, int], nse: str, mcx: str, cds: str) -> None:
    moment = at(WEDNESDAY, *hhmm)
    assert sessions.phase("NSE", moment) == nse
    assert sessions.phase("BSE", moment) == nse
    assert sessions.phase("CDS", moment) == cds
    assert sessions.phase("MCX", moment) == mcx


def test_mcx_closes_by_us_daylight_saving(sessions: MarketSessions) -> None:
    summer = dt.date(2026, 7, 15)  # US DST: 23:30
    assert sessions.phase("MCX", at(summer, 23, 29)) == "continuous"
    assert sessions.phase("MCX", at(summer, 23, 31)) == "closed"
    winter = dt.date(2026, 12, 2)  # US standard time: 23:55
    assert sessions.phase("MCX", at(winter, 23, 50)) == "continuous"
    assert sessions.phase("MCX", at(winter, 23, 55)) == "closed"


def test_an_nse_holiday_with_an_mcx_evening(sessions: MarketSessions) -> None:
    assert sessions.phase("NSE", at(HOLI, 10)) == "closed"
    assert sessions.phase("NSE", at(HOLI, 9, 5)) == "closed"  # no pre-open on a holiday
    assert sessions.phase("CDS", at(HOLI, 10)) == "closed"
    assert sessions.phase("MCX", at(HOLI, 10)) == "closed"
    assert sessions.phase("MCX", at(HOLI, 18)) == "continuous"
    assert sessions.continuous(at(HOLI, 18)) == {"MCX"}
    assert sessions.trading_segments(at(HOLI, 18)) == {ExchangeSegment.MCX_COMM}


def test_weekends_are_closed(sessions: MarketSessions) -> None:
    assert sessions.continuous(at(SATURDAY, 11)) == frozenset()


def test_every_segment_has_a_market() -> None:
    assert {market_of(s) for s in ExchangeSegment} == {"NSE", "BSE", "MCX", "CDS"}
    assert market_of(ExchangeSegment.IDX_I) == "NSE"
    assert market_of(int(ExchangeSegment.MCX_COMM)) == "MCX"
