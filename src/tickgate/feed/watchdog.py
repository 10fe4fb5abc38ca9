"""Quiet or dead: which silent sockets to recycle. A pure judge; the feed manager's loop feeds it.

Dhan sends a packet only when something changes, and a socket's instruments can all be quiet for a long
time: an NSE-only socket is silent from 15:30 to the next morning, on NSE holidays, and in pre-open. Liveness
is the WebSocket ping/pong (the client closes a socket that stops answering pings). Silence is only
suspicious while one of the socket's own markets trades, and only *relative to its peers*:

* a socket is stale when a peer carrying one of the same trading markets received data more than
  ``stale_after_s`` *after* this socket's last data: the market went on while this socket heard nothing
  (the server stopped sending to it): recycle it. Comparing the two sockets' last data, not each with
  now, is what keeps a staggered silence quiet: at a close (or a halt) sockets fall silent moments apart,
  and the last to fall silent is no evidence against the first;
* a peer's data counts as evidence only once that peer has been up for ``stale_after_s``: a (re)subscribe
  is answered with a snapshot of last values whether or not the market trades, and a halted market's
  reconnect must not make every other socket look stale;
* every socket carrying those markets silent at once means the market is quiet or halted (or the account's
  data stopped): raise an alert, recycle nothing;
* recycles are rate-limited per socket (``recycle_min_interval_s``) and per account
  (``recycles_per_window`` in ``recycle_window_s``): Dhan answers a reconnect storm with 805 and may block
  the account. A recycle held back is counted and tried at a later tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tickgate.schedule.sessions import Market


@dataclass(frozen=True, slots=True)
class SocketSilence:
    """One up socket with instruments, as the watchdog sees it (monotonic seconds)."""

    id: int
    markets: frozenset[Market]  # the markets of the instruments it carries
    last_data: float  # when it last received data (its up time if it never did)
    up_since: float = float("-inf")  # when it (re)connected: data before up_since + stale is a snapshot


@dataclass(frozen=True, slots=True)
class Verdict:
    recycle: tuple[int, ...] = ()  # stale sockets to recycle now
    held: tuple[int, ...] = ()  # stale, but the rate limit holds them back
    quiet: frozenset[Market] = frozenset()  # trading markets on which every socket is silent


@dataclass(slots=True)
class StaleJudge:
    stale_after_s: float
    recycle_min_interval_s: float
    recycles_per_window: int
    recycle_window_s: float
    _last_recycle: dict[int, float] = field(default_factory=dict)
    _recent: deque[float] = field(default_factory=deque)

    def judge(self, sockets: Iterable[SocketSilence], trading: frozenset[Market], now: float) -> Verdict:
        """The verdict at ``now`` for the up sockets with instruments, given the markets trading now."""
        rows = list(sockets)
        stale_after = self.stale_after_s
        latest: dict[Market, float] = {}  # per market, the newest data on any socket
        evidence: dict[Market, float] = {}  # per market, the newest data that is not a subscribe snapshot
        for s in rows:
            for m in s.markets:
                latest[m] = max(latest.get(m, s.last_data), s.last_data)
                if s.last_data - s.up_since > stale_after:
                    evidence[m] = max(evidence.get(m, s.last_data), s.last_data)
        stale: list[int] = []
        quiet: set[Market] = set()
        for s in rows:
            live = s.markets & trading
            if not live or now - s.last_data <= stale_after:
                continue
            if any(evidence.get(m, s.last_data) - s.last_data > stale_after for m in live):
                stale.append(s.id)
            quiet |= {m for m in live if now - latest[m] > stale_after}
        recycle, held = self._admit(stale, now)
        return Verdict(tuple(recycle), tuple(held), frozenset(quiet))

    def _admit(self, stale: list[int], now: float) -> tuple[list[int], list[int]]:
        recent = self._recent
        while recent and now - recent[0] > self.recycle_window_s:
            recent.popleft()
        recycle, held = [], []
        for sid in stale:
            last = self._last_recycle.get(sid)
            if (last is not None and now - last < self.recycle_min_interval_s) or len(
                recent
            ) >= self.recycles_per_window:
                held.append(sid)
                continue
            self._last_recycle[sid] = now
            recent.append(now)
            recycle.append(sid)
        return recycle, held
