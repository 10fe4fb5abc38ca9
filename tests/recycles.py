"""What the stale-socket watchdog did, judged against the simulator's sessions (issue 16): a socket silent
while a peer carrying the same trading market receives data is stale, so a recycle is wrong only when every
market the socket carried was shut at that moment. Shared by the market-day and the week tests."""

from __future__ import annotations

import datetime as dt

from tickgate.clock import VirtualClock
from tickgate.feed import FeedManager
from tickgate.schedule.sessions import MarketSessions


def recycled_while_shut(feed: FeedManager, clock: VirtualClock, sessions: MarketSessions | None) -> list[str]:
    """Each stale recycle of a socket none of whose markets was in continuous session at that moment."""
    assert sessions is not None, "the simulator runs without market hours: nothing to judge recycles by"
    shut = []
    for when, sid, markets in feed.recycle_log:
        moment = clock.now() - dt.timedelta(seconds=clock.monotonic() - when)
        if not markets & set(sessions.continuous(moment)):
            shut.append(f"socket {sid} recycled as stale at {moment:%a %H:%M} with {sorted(markets)} shut")
    return shut
