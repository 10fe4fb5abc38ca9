"""Which market each feed segment belongs to, and what phase that market's day is in at a moment (IST).

One source for both sides of the wire: the simulator goes quiet outside a segment's continuous session,
and the client's watchdog judges a silent socket only while one of its own markets is trading. Dhan sends a
packet only when something changes, so a socket holding NSE instruments is silent from 15:30 to the next
morning: that is a quiet market, not a dead socket.

* NSE and BSE (cash, F&O, indices): pre-open 09:00–09:15 (orders are collected, nothing trades), continuous
  09:15–15:30, on the exchange's trading days.
* Currency derivatives (NSE and BSE): continuous 09:00–17:00 on NSE trading days.
* MCX: continuous from 09:00 to 23:30 (US daylight saving) or 23:55, including the morning-only and
  evening-only sessions of NSE holidays (all from :class:`~tickgate.schedule.calendar.TradingCalendar`).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from tickgate.clock import IST
from tickgate.dhan.protocol import ExchangeSegment
from tickgate.schedule.calendar import NSE_OPEN, TradingCalendar

Market = Literal["NSE", "BSE", "MCX", "CDS"]
"""An exchange's session as the feed sees it; CDS is the currency derivatives segment of NSE and BSE."""
MARKETS: tuple[Market, ...] = ("NSE", "BSE", "MCX", "CDS")
Phase = Literal["closed", "pre_open", "continuous"]

SEGMENT_MARKET: dict[ExchangeSegment, Market] = {
    ExchangeSegment.IDX_I: "NSE",  # NIFTY and SENSEX alike: both exchanges keep the same hours
    ExchangeSegment.NSE_EQ: "NSE",
    ExchangeSegment.NSE_FNO: "NSE",
    ExchangeSegment.NSE_CURRENCY: "CDS",
    ExchangeSegment.BSE_EQ: "BSE",
    ExchangeSegment.BSE_FNO: "BSE",
    ExchangeSegment.BSE_CURRENCY: "CDS",
    ExchangeSegment.MCX_COMM: "MCX",
}
PRE_OPEN = dt.time(9, 0)
CDS_OPEN, CDS_CLOSE = dt.time(9, 0), dt.time(17, 0)


def market_of(segment: ExchangeSegment | int) -> Market:
    return SEGMENT_MARKET[ExchangeSegment(segment)]


class MarketSessions:
    """Phases of each market's day, from the trading calendar."""

    def __init__(self, calendar: TradingCalendar) -> None:
        self.calendar = calendar

    def phase(self, market: Market, moment: dt.datetime) -> Phase:
        local = moment.astimezone(IST)
        day, now = local.date(), local.time()
        if market == "CDS":
            if not self.calendar.is_trading_day("NSE", day):
                return "closed"
            return "continuous" if CDS_OPEN <= now < CDS_CLOSE else "closed"
        opens = self.calendar.session_open(market, day)
        closes = self.calendar.session_close(market, day)
        if opens is None or closes is None:
            return "closed"
        if opens <= local < closes:  # MCX's morning-only and evening-only holiday sessions included
            return "continuous"
        if market != "MCX" and opens.time() == NSE_OPEN and PRE_OPEN <= now < NSE_OPEN:
            return "pre_open"
        return "closed"

    def continuous(self, moment: dt.datetime) -> frozenset[Market]:
        """The markets trading continuously at ``moment``."""
        return frozenset(m for m in MARKETS if self.phase(m, moment) == "continuous")

    def trading_segments(self, moment: dt.datetime) -> frozenset[ExchangeSegment]:
        """The feed segments whose market trades continuously at ``moment``: the ones that send data."""
        open_markets = self.continuous(moment)
        return frozenset(seg for seg, market in SEGMENT_MARKET.items() if market in open_markets)
