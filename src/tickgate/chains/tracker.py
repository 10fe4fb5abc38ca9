"""Recentring tracked chain windows as the underlying moves, with hysteresis and a cooldown.

A window follows its underlying: once the listed strike nearest to the live LTP is no longer the window's
ATM, the window moves. Moving exactly at the midpoint between two strikes would flap on every tick of a
price wiggling around it (each flap = unsubscribes + subscribes on the feed), so the move waits until the
LTP is ``hysteresis`` (default 0.6) local strike gaps past the current ATM, and a chain moves at most once
per ``recentre_cooldown_s``. Pure: ``now`` is passed in; the caller sends each :class:`Recentre` to the
planner as ``planner.replace_keys(r.group, r.new.keys(), now)``, which emits only the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tickgate.chains.atm import AtmEngine, ChainWindow, LtpLookup, as_price, nearest_index
from tickgate.config import ChainSettings
from tickgate.dhan.protocol import InstrumentKey
from tickgate.planner.types import GroupId

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Recentre:
    """One chain to move: the planner group, the window it had and the one it should have now."""

    group: GroupId
    old: ChainWindow
    new: ChainWindow

    @property
    def added(self) -> tuple[InstrumentKey, ...]:
        """Keys entering the window (what the planner will subscribe, unless another group has them)."""
        before = set(self.old.keys())
        return tuple(k for k in self.new.option_keys() if k not in before)

    @property
    def removed(self) -> tuple[InstrumentKey, ...]:
        after = set(self.new.keys())
        return tuple(k for k in self.old.option_keys() if k not in after)

    def describe(self) -> str:
        o, n = self.old, self.new
        return (
            f"{self.group}: ATM {o.atm_strike:g} → {n.atm_strike:g} (LTP {n.ltp:g}), "
            f"+{len(self.added)} -{len(self.removed)} keys"
        )


def recentre_target(window: ChainWindow, ltp: float, hysteresis: float) -> int | None:
    """The listing index the window should move its ATM to for ``ltp``, or ``None`` to stay.

    Moves when the nearest listed strike differs from the current ATM *and* the LTP is at least
    ``hysteresis`` × the gap between the ATM and its neighbour on that side away from the ATM (the local
    gap: grids are not uniform). The new ATM is the nearest strike, however far the price jumped."""
    listing = window.listing
    target = nearest_index(listing.strikes, ltp)
    current = window.atm_index
    if target == current:
        return None
    direction = 1 if target > current else -1
    gap = listing.local_gap(current, direction)
    moved = (ltp - listing.strikes[current]) * direction
    if moved + _EPS * max(1.0, abs(ltp)) >= hysteresis * gap:
        return target
    return None


@dataclass(slots=True)
class _Tracked:
    window: ChainWindow
    last_recentre: float | None  # None: never moved yet, so the first live tick may move it at once


class ChainTracker:
    """The chains being followed, by planner group id.

    :meth:`check` commits the moves it returns (the tracker then holds the new windows); if the planner
    refuses one (capacity), :meth:`revert` puts the old window back."""

    def __init__(self, engine: AtmEngine, settings: ChainSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings if settings is not None else engine.settings
        self._chains: dict[GroupId, _Tracked] = {}

    def track(self, group: GroupId, window: ChainWindow, now: float | None = None) -> None:
        """Follow ``window`` under ``group`` (replacing what was tracked there). ``now`` starts the
        cooldown; ``None`` lets the first live price move a window built from a previous close at once."""
        self._chains[group] = _Tracked(window, now)

    def untrack(self, group: GroupId) -> ChainWindow | None:
        t = self._chains.pop(group, None)
        return None if t is None else t.window

    def window(self, group: GroupId) -> ChainWindow | None:
        t = self._chains.get(group)
        return None if t is None else t.window

    def __contains__(self, group: object) -> bool:
        return group in self._chains

    def __len__(self) -> int:
        return len(self._chains)

    def __iter__(self) -> Iterator[GroupId]:
        return iter(list(self._chains))

    def check(self, ltp_of: LtpLookup, now: float) -> list[Recentre]:
        """Windows to move for the current prices. ``ltp_of(underlying key)`` gives the live LTP (``None``
        or a non-positive value: no price yet, the chain is left alone)."""
        return list(self.moves(ltp_of, now))

    def moves(self, ltp_of: LtpLookup, now: float) -> Iterator[Recentre]:
        """:meth:`check` one chain at a time, each window computed when it is reached: a caller may yield
        between moves (the tracked chains may change meanwhile: a chain untracked before it is reached is
        skipped)."""
        hysteresis = self.settings.hysteresis
        cooldown = self.settings.recentre_cooldown_s
        for group, t in list(self._chains.items()):
            if self._chains.get(group) is not t:
                continue
            if t.last_recentre is not None and now - t.last_recentre < cooldown:
                continue
            ltp = as_price(ltp_of(t.window.underlying.key))
            if ltp is None or recentre_target(t.window, ltp, hysteresis) is None:
                continue
            new = self.engine.recentred(t.window, ltp, now=now)
            old, t.window, t.last_recentre = t.window, new, now
            yield Recentre(group, old, new)

    def revert(self, recentre: Recentre) -> None:
        """Undo a move the planner did not accept: the group keeps its old window (the cooldown still
        runs, so a refused move is not retried on every tick)."""
        t = self._chains.get(recentre.group)
        if t is not None and t.window is recentre.new:
            t.window = recentre.old
