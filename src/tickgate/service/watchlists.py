"""Users' watchlists: each entry is one Tier A planner group (a chain window plus its underlying).

The order of an add is chosen so a crash at any point leaves the database and the plan consistent:
the watchlist row is committed first (the user's intent is durable), then the planner decides. A planner
rejection deletes the row again; a crash between the two leaves a row that the next start restores —
the add simply completes late. Evictions mark the evicted rows so their owners see why they lost them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tickgate.chains.atm import (
    ChainError,
    ChainWindow,
)
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.planner import GroupRef, Planner, Tier
from tickgate.service.errors import CapacityExceeded, InvalidInput, NotFound, as_service_error
from tickgate.store.types import WatchlistEntry, WatchlistState

if TYPE_CHECKING:
    from tickgate.chains.atm import AtmEngine
    from tickgate.chains.tracker import ChainTracker
    from tickgate.clock import Clock
    from tickgate.feed import QuoteStore
    from tickgate.feed.backfill import Backfiller
    from tickgate.instruments import InstrumentRegistry
    from tickgate.orchestrator import Orchestrator
    from tickgate.store import Store


class WatchlistHost(Protocol):
    """What the watchlists use of the service, and nothing more (the service is one; mypy checks it)."""

    planner: Planner
    orchestrator: Orchestrator
    quotes: QuoteStore
    clock: Clock
    backfill: Backfiller | None

    @property
    def registry(self) -> InstrumentRegistry: ...
    @property
    def atm(self) -> AtmEngine: ...
    @property
    def tracker(self) -> ChainTracker: ...
    @property
    def store(self) -> Store: ...
    def today(self) -> dt.date: ...
    def remember_atm(self, window: ChainWindow, group: str | None = None) -> None: ...


SPOT = "SPOT"


def group_id_for(user_id: int, exchange: str, symbol: str, expiry: dt.date | None) -> str:
    """``A:<user>:<exchange>:<symbol>:<expiry|SPOT>`` — the exchange is in the id so end of day can pick
    a session's groups (NSE/BSE at 15:30, MCX later) straight from the planner."""
    return f"A:{user_id}:{exchange}:{symbol}:{expiry.isoformat() if expiry else SPOT}"


def exchange_of_group(group_id: str) -> str | None:
    parts = group_id.split(":")
    return parts[2] if len(parts) >= 5 and parts[0] == "A" else None


@dataclass(frozen=True, slots=True)
class Evicted:
    """A chain that lost its subscription to make room, and whose it was."""

    group: str
    user_id: int | None
    symbol: str | None
    expiry: str | None
    size: int

    @classmethod
    def of(cls, ref: GroupRef) -> Evicted:
        parts = ref.group.split(":")
        user = int(parts[1]) if len(parts) >= 5 and parts[1].isdigit() else None
        return cls(
            ref.group,
            user,
            parts[3] if len(parts) >= 5 else None,
            parts[4] if len(parts) >= 5 else None,
            ref.size,
        )


@dataclass(frozen=True, slots=True)
class AddResult:
    entry: WatchlistEntry
    status: str  # "added" | "touched"
    keys: tuple[InstrumentKey, ...]
    window: ChainWindow | None
    evicted: tuple[Evicted, ...] = ()
    suspended: bool = False
    message: str = ""
    view: WatchlistView | None = None  # the entry as GET /watchlist shows it, right after the add


@dataclass(slots=True)
class WatchlistView:
    entry: WatchlistEntry
    size: int = 0
    suspended: bool = False
    placed: bool = False
    pinned: bool = False
    window: ChainWindow | None = None
    keys: tuple[InstrumentKey, ...] = field(default_factory=tuple)


class WatchlistManager:
    def __init__(self, service: WatchlistHost) -> None:
        self.service = service
        # group id -> its watchlist row id. A group's row changes only through ``add`` (which sets it
        # here); a removed group leaves the planner, so a stale entry is never read while it is absent.
        self._ids: dict[str, int] = {}

    # -- building a group ------------------------------------------------------------------------------

    def build(
        self,
        symbol: str,
        expiry: dt.date | None,
        strikes: int | None,
        *,
        exchange: str | None = None,
        ltp: float | None = None,
    ) -> tuple[str, str, dt.date | None, tuple[InstrumentKey, ...], ChainWindow | None]:
        """Resolve what a watchlist entry subscribes: (symbol, exchange, expiry, keys, window).

        No expiry → the nearest listed one. ``strikes=0`` → the underlying alone (a stock on its own)."""
        svc = self.service
        underlying = svc.registry.underlying(symbol, exchange)
        if underlying is None:
            raise NotFound(f"unknown symbol {symbol!r}: not in the instrument master")
        if strikes is not None and strikes < 0:
            raise InvalidInput(f"strikes must be >= 0, got {strikes}")
        if strikes == 0:
            return underlying.symbol, underlying.exchange, None, (underlying.key,), None
        if expiry is None:
            expiries = svc.registry.option_expiries(
                underlying.symbol, svc.today(), exchange=underlying.exchange
            )
            if not expiries:
                raise NotFound(
                    f"no options listed for {underlying.symbol} (add it with strikes=0 to watch it alone)"
                )
            expiry = expiries[0].date
        try:
            window = svc.atm.window(
                underlying.symbol,
                expiry,
                strikes,
                ltp=ltp,
                quotes=svc.quotes.get,
                exchange=underlying.exchange,
                today=svc.today(),
                now=svc.clock.timestamp(),  # listings and windows are reused within the engine's TTL
            )
        except ChainError as exc:
            raise as_service_error(exc) from None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return window.symbol, window.exchange, window.expiry.date, window.keys(), window

    # -- operations ------------------------------------------------------------------------------------

    async def add(
        self,
        user_id: int,
        symbol: str,
        *,
        expiry: dt.date | None = None,
        strikes: int | None = None,
        mode: FeedMode = FeedMode.QUOTE,
        exchange: str | None = None,
        ltp: float | None = None,
    ) -> AddResult:
        async with self.service.store.priority():  # the writer's batches wait: this add's write goes first
            return await self._add(user_id, symbol, expiry, strikes, mode, exchange, ltp)

    async def _add(  # noqa: PLR0917 - add's arguments, in order
        self,
        user_id: int,
        symbol: str,
        expiry: dt.date | None,
        strikes: int | None,
        mode: FeedMode,
        exchange: str | None,
        ltp: float | None,
    ) -> AddResult:
        svc = self.service
        if ltp is None and strikes != 0:
            await self._price_underlying(symbol, exchange)
        sym, exch, exp, keys, window = self.build(symbol, expiry, strikes, exchange=exchange, ltp=ltp)
        group = group_id_for(user_id, exch, sym, exp)
        now = svc.clock.timestamp()
        if svc.planner.has_group(group):  # already watched: a duplicate add is a use (LRU)
            wid = await self.entry_id(group)
            existing = None if wid is None else await svc.store.watchlists.get(wid)
            if existing is not None and existing.user_id == user_id:
                self.touch(group, existing.id)
                view = self.view_of(existing)
                return AddResult(
                    existing, "touched", view.keys, view.window, suspended=view.suspended, view=view
                )
        # One statement: a new row, or an evicted row (or a half-finished add's) started over.
        entry = await svc.store.watchlists.put(
            user_id,
            sym,
            exchange=exch,
            group_id=group,
            mode=mode,
            expiry=exp,
            strikes=len(window.rows) if window else 0,
        )
        replaced = svc.planner.has_group(group)  # a concurrent identical add won the race to the planner
        cause = f"user {user_id} adding {sym}"
        if replaced:
            result = svc.orchestrator.apply(cause, Planner.replace_keys, group, keys, now, touch=True)
        else:
            result = svc.orchestrator.apply(
                cause, Planner.add_group, group, Tier.A, keys, mode, owner=str(user_id), now=now
            )
        if not result.accepted:
            if not replaced:  # a replaced group keeps its old window, and its row
                await svc.store.watchlists.remove(entry.id)
            cap = svc.planner.plan_capacity()
            raise CapacityExceeded(
                f"cannot fit {sym} {exp or ''} ({len(keys)} instruments): {result.reason}",
                needed=len(keys),
                tier_b=cap.tier_b,
                tier_a=cap.tier_a,
                free=cap.free,
                total=cap.total,
            )
        self._ids[group] = entry.id
        if window is not None:
            svc.tracker.track(group, window, now)
            svc.remember_atm(window, group)
        evicted = tuple(Evicted.of(ref) for ref in result.evicted)  # marked by the service's subscriber
        svc.store.writer.submit_log(
            "WATCHLIST_ADD",
            actor=f"user:{user_id}",
            group_id=group,
            owner=str(user_id),
            tier=Tier.A,
            count=len(keys),
            mode=mode,
            reason="; ".join(f"evicted {e.symbol} {e.expiry} of user {e.user_id}" for e in evicted) or None,
        )
        removed = ", ".join(f"{e.symbol}" for e in evicted)
        message = f"Added {sym}" + (f", removed {removed} (capacity limit)" if removed else "")
        view = self.view_of(entry)
        return AddResult(entry, "added", keys, window, evicted, view.suspended, message, view)

    async def _price_underlying(self, symbol: str, exchange: str | None) -> None:
        """A chain whose underlying has no price yet (no tick since the start, a thin stock, after the close)
        would be placed around a guess and moved on its first tick, a whole window unsubscribed and
        subscribed again. One REST quote of the underlying first (within the rate limit) places it right."""
        svc = self.service
        if svc.backfill is None:
            return
        underlying = svc.registry.underlying(symbol, exchange)
        if underlying is None:
            return  # build() answers the unknown symbol
        quote = svc.quotes.get(underlying.key)
        if quote is None or quote.ltp is None:
            await svc.backfill.quote_now([underlying.key])

    def touch(self, group: str, watchlist_id: int) -> None:
        """A use of a watched chain: first in the planner's LRU now, and its row's last use (what a restart
        rebuilds the LRU from) written by the store's writer, coalesced — viewing a chain never waits for
        the database."""
        now = self.service.clock.timestamp()
        self.service.planner.touch(group, now)
        self.service.store.writer.submit_touch(watchlist_id, dt.datetime.fromtimestamp(now, dt.UTC))

    def cached_entry_id(self, group: str) -> int | None:
        return self._ids.get(group)

    async def entry_id(self, group: str) -> int | None:
        """The watchlist row of a planner group (cached: a chain view must not cost a database read)."""
        wid = self._ids.get(group)
        if wid is None:
            entry = await self.service.store.watchlists.by_group(group)
            if entry is None:
                return None
            wid = self._ids[group] = entry.id
        return wid

    def forget(self, groups: Iterable[str]) -> None:
        """Drop the cached row ids of groups that left the plan (the service's plan subscriber calls it)."""
        for group in groups:
            self._ids.pop(group, None)

    async def remove(self, user_id: int, watchlist_id: int) -> WatchlistEntry:
        svc = self.service
        entry = await svc.store.watchlists.get(watchlist_id)
        if entry is None or entry.user_id != user_id:
            raise NotFound(f"no watchlist entry {watchlist_id} for this user")
        if svc.planner.has_group(entry.group_id):
            now = svc.clock.timestamp()
            cause = f"user {user_id} removing {entry.symbol}"
            svc.orchestrator.apply(cause, Planner.remove_group, entry.group_id, now)  # untracked, forgotten
        removed = await svc.store.watchlists.remove(watchlist_id, user_id)
        svc.store.writer.submit_log(
            "WATCHLIST_REMOVE",
            actor=f"user:{user_id}",
            group_id=entry.group_id,
            owner=str(user_id),
            tier=Tier.A,
        )
        return removed or entry

    async def list(self, user_id: int) -> list[WatchlistView]:
        svc = self.service
        await svc.store.writer.flush(timeout=30)  # eviction marks queued by other users' adds
        return [self.view_of(entry) for entry in await svc.store.watchlists.rows(user_id)]

    def view_of(self, entry: WatchlistEntry) -> WatchlistView:
        """An entry with its chain's state in the plan now: size, placement, pin, window, keys."""
        svc = self.service
        view = WatchlistView(entry)
        if svc.planner.has_group(entry.group_id):
            info = svc.planner.group(entry.group_id)
            view.size = info.size
            view.pinned = info.pinned
            view.suspended = info.suspended
            view.placed = not info.suspended
            view.window = svc.tracker.window(entry.group_id)
            view.keys = svc.planner.group_keys(entry.group_id)
        return view

    async def view(self, user_id: int, watchlist_id: int) -> WatchlistView:
        """Looking at an entry is a use: it moves up the LRU (a true LRU, not insertion order)."""
        svc = self.service
        entry = await svc.store.watchlists.get(watchlist_id)
        if entry is None or entry.user_id != user_id:
            raise NotFound(f"no watchlist entry {watchlist_id} for this user")
        if svc.planner.has_group(entry.group_id):
            self.touch(entry.group_id, entry.id)
        for view in await self.list(user_id):
            if view.entry.id == watchlist_id:
                return view
        raise NotFound(f"no watchlist entry {watchlist_id} for this user")

    # -- restart recovery ------------------------------------------------------------------------------

    async def restore(self) -> int:
        """Re-add every active row (least recently used first, so the planner's LRU matches the database).

        A chain's window is rebuilt around the ATM it sat on (its row's, else the underlying's cached one),
        so a restart subscribes the same strikes as before; rows whose contracts are gone are dropped with an
        audit entry."""
        svc = self.service
        restored = 0
        for entry in await svc.store.watchlists.active():
            if svc.planner.has_group(entry.group_id):
                continue
            ltp = entry.atm
            if ltp is None and entry.expiry is not None:  # placed before rows kept their own
                cached = await svc.store.atm.get(entry.symbol, entry.expiry)
                ltp = cached.atm if cached is not None else None
            try:
                _sym, _exch, _exp, keys, window = self.build(
                    entry.symbol,
                    entry.expiry,
                    entry.strikes if entry.expiry is not None else 0,
                    exchange=entry.exchange,
                    ltp=ltp,
                )
            except (NotFound, InvalidInput) as exc:
                await svc.store.watchlists.remove(entry.id)
                svc.store.writer.submit_log(
                    "RECOVERY",
                    actor="tickgate",
                    group_id=entry.group_id,
                    owner=str(entry.user_id),
                    reason=f"dropped on restart: {exc}",
                )
                continue
            last_used = entry.last_used.timestamp()
            result = svc.orchestrator.apply(
                "restart",
                Planner.add_group,
                entry.group_id,
                Tier.A,
                keys,
                entry.mode,
                str(entry.user_id),
                last_used,
            )
            if not result.accepted:
                await svc.store.watchlists.set_state(
                    [entry.group_id], WatchlistState.EVICTED, reason=f"capacity on restart: {result.reason}"
                )
                continue
            if window is not None:
                svc.tracker.track(entry.group_id, window, svc.clock.timestamp())
            restored += 1
        return restored
