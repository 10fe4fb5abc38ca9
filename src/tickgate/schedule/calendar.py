"""Which days each exchange trades, and when its session closes (IST).

Holidays come from the data file shipped in the package (``tickgate/data/holidays.toml``, with sources);
years it does not cover fall back to the ``holidays`` package's NSE financial calendar, loudly, because
that calendar estimates moon-based festivals. MCX closes at 23:30 while US daylight saving is on and at
23:55 otherwise (its energy and metal contracts follow US markets); on a holiday it may open only for the
morning or only for the evening session.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from tickgate.clock import IST

NEW_YORK = ZoneInfo("America/New_York")
Exchange = Literal["NSE", "BSE", "MCX"]
EXCHANGES: tuple[Exchange, ...] = ("NSE", "BSE", "MCX")

NSE_OPEN, NSE_CLOSE = dt.time(9, 15), dt.time(15, 30)
MCX_OPEN, MCX_EVENING = dt.time(9, 0), dt.time(17, 0)
MCX_CLOSE_US_DST, MCX_CLOSE_US_STANDARD = dt.time(23, 30), dt.time(23, 55)


class CalendarWarning(UserWarning):
    """A date outside the shipped holiday data was answered from an estimate."""


@dataclass(frozen=True, slots=True)
class Holiday:
    date: dt.date
    name: str
    morning_open: bool = False  # MCX only: the 09:00–17:00 session trades despite the holiday
    evening_open: bool = False  # MCX only: the 17:00–close session trades despite the holiday


def us_dst_in_effect(day: dt.date) -> bool:
    """US daylight saving on ``day`` (checked at New York noon), which sets MCX's closing time."""
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=NEW_YORK)
    return bool(noon.dst())


def mcx_close_time(day: dt.date) -> dt.time:
    return MCX_CLOSE_US_DST if us_dst_in_effect(day) else MCX_CLOSE_US_STANDARD


def contract_close(expiry: dt.date, exchange: str, *, currency: bool = False) -> dt.datetime:
    """When a derivative of ``expiry`` stops trading (IST): 15:30 on NSE and BSE, 17:00 for currency
    contracts, and MCX at that day's close, 23:30 or 23:55 by US daylight saving (the master's "23:30" is
    not the session's close in winter). The simulator prices to it and the analytics count time to it."""
    if exchange == "MCX":
        close = mcx_close_time(expiry)
    else:
        close = dt.time(17, 0) if currency or exchange == "CUR" else dt.time(15, 30)
    return dt.datetime.combine(expiry, close, IST)


class TradingCalendar:
    """Trading days and session closes per exchange."""

    def __init__(self, holidays: dict[Exchange, dict[int, dict[dt.date, Holiday]]], source: str) -> None:
        self._holidays = holidays
        self.source = source
        self._fallback_cache: dict[int, dict[dt.date, str]] = {}

    @classmethod
    def load(cls, path: Path | None = None) -> TradingCalendar:
        if path is None:
            text = resources.files("tickgate.data").joinpath("holidays.toml").read_text(encoding="utf-8")
            source = "tickgate/data/holidays.toml"
        else:
            text, source = path.read_text(encoding="utf-8"), str(path)
        return cls.parse(tomllib.loads(text), source)

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "<data>") -> TradingCalendar:
        holidays: dict[Exchange, dict[int, dict[dt.date, Holiday]]] = {ex: {} for ex in EXCHANGES}
        for exchange in EXCHANGES:
            for year_text, listed in data.get(exchange, {}).items():
                year = int(year_text)
                # a string names another exchange whose list is the same ("BSE": "NSE")
                entries = data[listed][year_text] if isinstance(listed, str) else listed
                days: dict[dt.date, Holiday] = {}
                for entry in entries:
                    day = entry["date"]
                    if not isinstance(day, dt.date) or day.year != year:
                        raise ValueError(f"{source}: {exchange} {year}: bad holiday date {day!r}")
                    days[day] = Holiday(
                        day,
                        str(entry["name"]),
                        bool(entry.get("morning", False)),
                        bool(entry.get("evening", False)),
                    )
                holidays[exchange][year] = days
        return cls(holidays, source)

    def covered_years(self, exchange: Exchange) -> list[int]:
        return sorted(self._holidays[exchange])

    def holiday(self, exchange: Exchange, day: dt.date) -> Holiday | None:
        """The holiday on ``day`` (weekdays only), from the data file or, beyond it, the estimate."""
        year = self._holidays[exchange].get(day.year)
        if year is not None:
            return year.get(day)
        name = self._fallback(day.year).get(day)
        if name is None:
            return None
        # The estimate knows no MCX half-sessions: assume MCX keeps its evening session, as it usually does.
        return Holiday(day, name, morning_open=False, evening_open=exchange == "MCX")

    def _fallback(self, year: int) -> dict[dt.date, str]:
        if year not in self._fallback_cache:
            warnings.warn(
                f"no official holiday list for {year} in {self.source}: using the `holidays` package's "
                f"estimated NSE calendar. Add the exchanges' {year} circulars to the data file.",
                CalendarWarning,
                stacklevel=3,
            )
            import holidays as holidays_pkg

            estimated = holidays_pkg.financial_holidays("XNSE", years=year)
            self._fallback_cache[year] = {day: str(name) for day, name in estimated.items()}
        return self._fallback_cache[year]

    def is_trading_day(self, exchange: Exchange, day: dt.date) -> bool:
        """Any session at all on ``day`` (for MCX: morning or evening)."""
        if day.weekday() >= 5:
            return False
        holiday = self.holiday(exchange, day)
        return holiday is None or holiday.morning_open or holiday.evening_open

    def session_close(self, exchange: Exchange, day: dt.date) -> dt.datetime | None:
        """When the day's last session ends (IST), or ``None`` if nothing trades that day."""
        if not self.is_trading_day(exchange, day):
            return None
        if exchange != "MCX":
            return dt.datetime.combine(day, NSE_CLOSE, tzinfo=IST)
        holiday = self.holiday(exchange, day)
        if holiday is not None and not holiday.evening_open:
            return dt.datetime.combine(day, MCX_EVENING, tzinfo=IST)  # morning-only day
        return dt.datetime.combine(day, mcx_close_time(day), tzinfo=IST)

    def session_open(self, exchange: Exchange, day: dt.date) -> dt.datetime | None:
        if not self.is_trading_day(exchange, day):
            return None
        if exchange != "MCX":
            return dt.datetime.combine(day, NSE_OPEN, tzinfo=IST)
        holiday = self.holiday(exchange, day)
        if holiday is not None and not holiday.morning_open:
            return dt.datetime.combine(day, MCX_EVENING, tzinfo=IST)  # evening-only day
        return dt.datetime.combine(day, MCX_OPEN, tzinfo=IST)

    def is_open(self, exchange: Exchange, moment: dt.datetime) -> bool:
        """Is ``exchange`` trading at ``moment`` (aware datetime)? Drives the stale-socket watchdog."""
        local = moment.astimezone(IST)
        opens, closes = self.session_open(exchange, local.date()), self.session_close(exchange, local.date())
        return opens is not None and closes is not None and opens <= local < closes

    def last_close_before(
        self, exchange: Exchange, moment: dt.datetime, lookback_days: int = 10
    ) -> dt.datetime | None:
        """The most recent session close at or before ``moment``: what an EOD catch-up must have run for."""
        local = moment.astimezone(IST)
        for back in range(lookback_days + 1):
            close = self.session_close(exchange, local.date() - dt.timedelta(days=back))
            if close is not None and close <= local:
                return close
        return None
