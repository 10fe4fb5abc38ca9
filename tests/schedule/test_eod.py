"""End-of-day jobs on a manual clock: trading day, holiday, the MCX US-DST switch, catch-up after downtime."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from tickgate.clock import ManualClock
from tickgate.schedule.calendar import IST, Exchange, TradingCalendar
from tickgate.schedule.eod import (
    EodScheduler,
    missed_sessions,
    next_pre_open,
    next_session_close,
    session_close,
)


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return TradingCalendar.load()


def _at(y: int, m: int, d: int, hh: int, mm: int) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=IST)


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[Exchange, ...], dt.datetime]] = []
        self.pre_open: list[dt.date] = []

    async def cleanup(self, session: str, exchanges: tuple[Exchange, ...], close: dt.datetime) -> None:
        self.runs.append((session, exchanges, close))

    async def preopen(self, day: dt.date) -> None:
        self.pre_open.append(day)


def _scheduler(calendar: TradingCalendar, rec: Recorder, clock: ManualClock) -> EodScheduler:
    return EodScheduler(calendar, rec.cleanup, rec.preopen, clock=clock)


async def _settle() -> None:
    for _ in range(5):  # the jobs' tasks wake, run their action and go back to sleep
        await asyncio.sleep(0)


def test_fire_times_follow_the_calendar(calendar: TradingCalendar) -> None:
    wednesday = _at(2026, 11, 25, 9, 0)
    assert next_session_close(calendar, "NSE_BSE", wednesday) == _at(2026, 11, 25, 15, 30)
    assert next_session_close(calendar, "MCX", wednesday) == _at(2026, 11, 25, 23, 55)  # US DST is off
    assert next_pre_open(calendar, wednesday) == _at(2026, 11, 26, 8, 30)
    friday_night = _at(2026, 11, 27, 23, 59)
    assert next_session_close(calendar, "NSE_BSE", friday_night) == _at(2026, 11, 30, 15, 30)  # weekend
    assert next_pre_open(calendar, friday_night) == _at(2026, 11, 30, 8, 30)
    # a close is fired once: the next one after it is tomorrow's
    assert next_session_close(calendar, "NSE_BSE", _at(2026, 11, 25, 15, 30)) == _at(2026, 11, 26, 15, 30)
    # Guru Nanak Jayanti (Tue 24 Nov 2026): no NSE close, MCX evening session closes at 23:55
    monday_night = _at(2026, 11, 23, 16, 0)
    assert next_session_close(calendar, "NSE_BSE", monday_night) == _at(2026, 11, 25, 15, 30)
    assert next_session_close(calendar, "MCX", _at(2026, 11, 24, 9, 0)) == _at(2026, 11, 24, 23, 55)


async def test_jobs_fire_when_the_clock_reaches_them(calendar: TradingCalendar) -> None:
    rec = Recorder()
    clock = ManualClock(_at(2026, 11, 25, 9, 0))
    sched = _scheduler(calendar, rec, clock)
    sched.start()
    try:
        await _settle()
        assert rec.runs == []
        clock.set(_at(2026, 11, 25, 15, 29))
        await _settle()
        assert rec.runs == []
        clock.advance(59)
        await _settle()
        assert rec.runs == []  # 15:29:59
        clock.advance(1)
        await _settle()
        assert rec.runs == [("NSE_BSE", ("NSE", "BSE"), _at(2026, 11, 25, 15, 30))]
        clock.set(_at(2026, 11, 26, 8, 31))  # passes the MCX close (23:55) and the pre-open, in order
        await _settle()
        assert rec.runs[-1] == ("MCX", ("MCX",), _at(2026, 11, 25, 23, 55))
        assert rec.pre_open == [dt.date(2026, 11, 26)]
        jobs = {j["id"]: j["next_run"] for j in sched.jobs()}
        assert jobs == {
            "eod-nse-bse": _at(2026, 11, 26, 15, 30).isoformat(),
            "eod-mcx": _at(2026, 11, 26, 23, 55).isoformat(),
            "pre-open": _at(2026, 11, 27, 8, 30).isoformat(),
        }
    finally:
        sched.shutdown()


async def test_a_failing_job_is_counted_and_runs_again(
    calendar: TradingCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dt.datetime] = []

    async def broken(session: str, exchanges: tuple[Exchange, ...], close: dt.datetime) -> None:
        calls.append(close)
        raise RuntimeError("database away")

    clock = ManualClock(_at(2026, 11, 25, 15, 0))
    sched = EodScheduler(calendar, broken, Recorder().preopen, clock=clock)
    sched.start()
    try:
        clock.set(_at(2026, 11, 26, 15, 31))
        await _settle()
        assert sched.failures["eod-nse-bse"] == 2  # both closes tried, neither killed the loop
        assert calls[:2] == [_at(2026, 11, 25, 15, 30), _at(2026, 11, 26, 15, 30)]
        assert "database away" in caplog.text
    finally:
        sched.shutdown()


async def test_holiday_does_nothing_for_nse_but_mcx_evening_trades(calendar: TradingCalendar) -> None:
    rec = Recorder()
    clock = ManualClock(_at(2026, 11, 24, 9, 0))  # Guru Nanak Jayanti
    sched = _scheduler(calendar, rec, clock)
    sched.start()
    try:
        clock.set(_at(2026, 11, 24, 23, 56))
        await _settle()
        assert rec.runs == [("MCX", ("MCX",), _at(2026, 11, 24, 23, 55))]
    finally:
        sched.shutdown()
    assert session_close(calendar, "MCX", dt.date(2026, 12, 25)) is None  # Christmas: closed


@pytest.mark.parametrize(
    ("day", "close"),
    [((2026, 10, 30), (23, 30)), ((2026, 11, 2), (23, 55))],  # US DST ended 1 Nov 2026
)
def test_mcx_close_switches_with_us_dst(
    calendar: TradingCalendar, day: tuple[int, int, int], close: tuple[int, int]
) -> None:
    assert session_close(calendar, "MCX", dt.date(*day)) == _at(*day, *close)
    assert next_session_close(calendar, "MCX", _at(*day, 23, 29)) == _at(*day, *close)


def test_mcx_morning_only_holiday_closes_at_17(calendar: TradingCalendar) -> None:
    assert next_session_close(calendar, "MCX", _at(2026, 1, 1, 9, 0)) == _at(2026, 1, 1, 17, 0)


def test_missed_runs_are_caught_up_once(calendar: TradingCalendar) -> None:
    # down from Monday 15:00 until Wednesday 10:00 (Tuesday was an NSE holiday with an MCX evening)
    now = _at(2026, 11, 25, 10, 0)
    last = {"NSE_BSE": _at(2026, 11, 20, 15, 30), "MCX": _at(2026, 11, 20, 23, 55)}
    due = missed_sessions(calendar, now, last)
    assert due == {"NSE_BSE": _at(2026, 11, 23, 15, 30), "MCX": _at(2026, 11, 24, 23, 55)}
    done = {"NSE_BSE": _at(2026, 11, 23, 15, 30), "MCX": _at(2026, 11, 24, 23, 55)}
    assert missed_sessions(calendar, now, done) == {}
    assert set(missed_sessions(calendar, now, {})) == {"NSE_BSE", "MCX"}
