"""How many of the account's sockets tickgate may hold while other programs share the client id.

A pure state machine over market seconds; :class:`tickgate.dhan.client.FeedPool` feeds it 805s and
reconnects and asks it which sockets to hold back.

Why: Dhan allows five feed sockets per client id, and a sixth drops the *oldest* with 805. tickgate
never opens more than its own budget, so an 805 means another program (a charting tool, a second
script) opened a socket on the same account. Reconnecting would drop that program's socket in turn, it
would come back and drop ours: a ping-pong with no end, and Dhan may block an account that storms.

The rule:

* ``strikes`` 805s within ``window_s`` (one may be a transient: an old socket Dhan has not forgotten)
  give up every socket that is down on an 805 at that moment (at least the one just hit), never the
  last one. Their keys were already re-placed by the planner when they went down; what no longer fits
  is suspended, least recently used Tier A first, Tier B last (the planner's usual rule).
* After ``regrow_after_s`` without an 805 the budget probes: one socket comes back. An 805 during the
  probe (on the probe or on the oldest socket it crowded out) gives that socket up again at once and
  doubles the wait (to ``regrow_max_s``); a probe that lives ``window_s`` succeeded and the next one may
  follow after the base wait.

So an episode costs the other program at most the 805s its own sockets cause on arrival (one per socket
it opens), and tickgate at most one 805 per probe.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SocketBudget:
    sockets: int  # tickgate's own sockets (the account's less those reserved)
    strikes: int = 2
    window_s: float = 600.0
    regrow_after_s: float = 5_400.0
    regrow_max_s: float = 4 * 3_600.0
    given_up: set[int] = field(default_factory=set)
    shrinks: int = 0  # sockets given up, over the process's life
    grows: int = 0  # probes that lived
    last_805: float | None = None
    reason: str | None = None
    _recent: deque[float] = field(default_factory=deque)
    _wait: float = 0.0
    _probe: tuple[int, float] | None = None  # (socket, since)

    def __post_init__(self) -> None:
        self._wait = self.regrow_after_s

    @property
    def size(self) -> int:
        """Sockets tickgate may hold now."""
        return self.sockets - len(self.given_up)

    @property
    def probing(self) -> int | None:
        return None if self._probe is None else self._probe[0]

    def on_805(self, socket: int, down_on_805: set[int], now: float) -> set[int]:
        """An 805 closed ``socket``; ``down_on_805`` are the sockets down on an 805 right now (``socket``
        among them). Returns the sockets given up by it."""
        self.last_805 = now
        recent = self._recent
        recent.append(now)
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        if self._probe is not None:
            # The other program is still there: the probe crowded out the oldest socket (the probe itself
            # or another of ours). Give that one up at once and wait longer before the next probe.
            self._probe = None
            self._wait = min(self._wait * 2, self.regrow_max_s)
            return self._give_up({socket}, "a probe to grow back was answered with 805")
        if len(recent) < self.strikes:
            return set()
        return self._give_up(
            down_on_805 | {socket},
            f"{len(recent)} 805s within {_duration(self.window_s)}: another program on the client id",
        )

    def _give_up(self, sockets: set[int], why: str) -> set[int]:
        room = self.size - 1  # never the last socket
        chosen = set(sorted(sockets - self.given_up)[:room])
        if chosen:
            self.given_up |= chosen
            self.shrinks += len(chosen)
            self.reason = f"{why}; gave up socket(s) {', '.join(map(str, sorted(chosen)))}"
        return chosen

    def due(self, now: float) -> int | None:
        """The socket to probe now, if the quiet period is over (it leaves ``given_up``), else None. Also
        settles a probe that lived through ``window_s``."""
        if self._probe is not None:
            socket, since = self._probe
            if now - since < self.window_s:
                return None
            self._probe = None
            self.grows += 1
            self._wait = self.regrow_after_s
            if not self.given_up:
                self.reason = None
        if not self.given_up:
            return None
        quiet_since = self.last_805 if self.last_805 is not None else now
        if now - quiet_since < self._wait:
            return None
        socket = min(self.given_up)
        self.given_up.discard(socket)
        self._probe = (socket, now)
        return socket

    def status(self, now: float) -> dict[str, object]:
        quiet = None if self.last_805 is None else now - self.last_805
        return {
            "sockets": self.size,
            "of": self.sockets,
            "given_up": sorted(self.given_up),
            "probing": self.probing,
            "reason": self.reason if self.given_up or self._probe else None,
            "next_probe_in_s": (None if not self.given_up or quiet is None else max(0.0, self._wait - quiet)),
            "shrinks": self.shrinks,
            "grows": self.grows,
        }


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
