"""JSON rendering of quotes and option chains for the hot paths (chain GETs, the push channel).

A quote is rendered to bytes once per update and reused by every reader: a hundred push clients on the
NIFTY chain, or thousands of chain GETs a second, cost one ``json.dumps`` per instrument update instead of
one per reader. An option-chain response is rendered whole and reused for ``api.chain_cache_s`` (a REST
snapshot at most that old; the push channel is the live view). The bytes are exactly what the pydantic
models (:class:`~tickgate.api.models.QuoteOut`, :class:`~tickgate.api.models.OptionChainResponse`) describe;
a test validates them against those models.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from tickgate.chains.atm import ChainWindow
from tickgate.clock import Clock
from tickgate.dhan.protocol import InstrumentKey
from tickgate.feed.quotes import QuoteSnapshot, QuoteStore

if TYPE_CHECKING:
    from starlette.types import Scope

NULL = b"null"
_PACKER = msgpack.Packer(use_bin_type=True)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def request_key(scope: Scope) -> tuple[str, bytes]:
    """The cache key of a chain request: its exact path and query string."""
    return str(scope["path"]), bytes(scope.get("query_string", b""))


def quote_dict(q: QuoteSnapshot) -> dict[str, Any]:
    """A quote as :class:`~tickgate.api.models.QuoteOut` has it (the snapshot plus its update count)."""
    data = q.as_dict()
    data["updates"] = q.updates
    return data


def quote_json(q: QuoteSnapshot) -> bytes:
    return _dumps(quote_dict(q)).encode()


def quote_msgpack(q: QuoteSnapshot) -> bytes:
    return bytes(msgpack.packb(quote_dict(q), use_bin_type=True))


class QuoteRenderer:
    """Rendered quotes by quote-store slot, re-rendered only when the slot's update counter moved."""

    def __init__(self, store: QuoteStore) -> None:
        self.store = store
        self._json: dict[int, tuple[int, int, bytes]] = {}
        self._msgpack: dict[int, tuple[int, int, bytes]] = {}
        self.generation = 0
        self.rendered = 0
        self.reused = 0

    def next_generation(self) -> None:
        """A new push tick: a quote rendered during the previous one is rendered again if it changed.
        Within one tick a quote is rendered once, so every client of that tick gets the same bytes."""
        self.generation += 1

    def slot_json(self, slot: int, *, this_tick: bool = False) -> bytes:
        """The slot's latest quote as JSON; with ``this_tick``, what was rendered for it during the
        current push tick if anything was (the push channel: one rendering per quote per tick)."""
        return self._render(slot, self._json, quote_json, this_tick)

    def slot_msgpack(self, slot: int, *, this_tick: bool = False) -> bytes:
        return self._render(slot, self._msgpack, quote_msgpack, this_tick)

    def _render(
        self,
        slot: int,
        cache: dict[int, tuple[int, int, bytes]],
        render: Callable[[QuoteSnapshot], bytes],
        this_tick: bool,
    ) -> bytes:
        updates = self.store.updates_at(slot)
        hit = cache.get(slot)
        if hit is not None and (hit[0] == updates or (this_tick and hit[1] == self.generation)):
            self.reused += 1
            return hit[2]
        body = render(self.store.snapshot_at(slot))
        cache[slot] = (updates, self.generation, body)
        self.rendered += 1
        return body

    def quotes_message(self, slots: list[int], coalesced: int, *, binary: bool) -> bytes:
        """A push ``{"type": "quotes", "quotes": [...], "coalesced": n}`` message from cached quotes."""
        if binary:
            pack = _PACKER.pack
            parts = [
                _PACKER.pack_map_header(3),
                pack("type"),
                pack("quotes"),
                pack("quotes"),
                _PACKER.pack_array_header(len(slots)),
                *(self.slot_msgpack(s, this_tick=True) for s in slots),
                pack("coalesced"),
                pack(coalesced),
            ]
            return b"".join(parts)
        body = b",".join([self.slot_json(s, this_tick=True) for s in slots])
        return b'{"type":"quotes","quotes":[%s],"coalesced":%d}' % (body, coalesced)

    def quote(self, key: InstrumentKey) -> bytes:
        """The key's quote as JSON, ``null`` when the store has never heard of it."""
        slot = self.store.slot_of(key)
        return NULL if slot is None else self.slot_json(slot)

    def leg(self, key: InstrumentKey | None) -> bytes:
        """A :class:`~tickgate.api.models.LegOut` (or ``null``)."""
        if key is None:
            return NULL
        return b'{"security_id":%d,"key":"%s","quote":%s}' % (
            key.security_id,
            str(key).encode(),
            self.quote(key),
        )


def chain_json(window: ChainWindow, renderer: QuoteRenderer) -> bytes:
    """An :class:`~tickgate.api.models.OptionChainResponse` without its closing ``,"watchlist_id":…}`` (that
    part is the caller's: it differs per user)."""
    atm = window.atm_strike
    head = _dumps(
        {
            "symbol": window.symbol,
            "exchange": window.exchange,
            "expiry": window.expiry.date.isoformat(),
            "expiry_kind": str(window.expiry.kind),
            "atm_strike": float(atm),
            "ltp": float(window.ltp),
            "ltp_source": str(window.ltp_source),
            "step": float(window.step),
            "strikes": len(window.rows),
            "listed": window.listed,
            "truncated_below": window.truncated_below,
            "truncated_above": window.truncated_above,
        }
    ).encode()
    leg = renderer.leg
    rows = b",".join(
        b'{"strike":%s,"atm":%s,"ce":%s,"pe":%s}'
        % (
            repr(float(r.strike)).encode(),
            b"true" if r.strike == atm else b"false",
            leg(r.ce),
            leg(r.pe),
        )
        for r in window.rows
    )
    return b'%s,"underlying":%s,"rows":[%s]' % (head[:-1], leg(window.underlying.key), rows)


def finish_chain(body: bytes, watchlist_id: int | None) -> bytes:
    return body + (
        b',"watchlist_id":null}' if watchlist_id is None else b',"watchlist_id":%d}' % watchlist_id
    )


@dataclass(frozen=True, slots=True)
class CachedChain:
    built: float
    body: bytes
    symbol: str
    exchange: str
    expiry: dt.date


class ChainCache:
    """Rendered chains by request, kept ``max_age`` seconds; bounded (least recently used dropped)."""

    def __init__(self, max_age: float, clock: Clock, max_entries: int = 256) -> None:
        self.max_age = max_age
        self.clock = clock  # ages are market time: a quote "at most 50 ms old" means on the service's clock
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, CachedChain] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, request: Hashable) -> CachedChain | None:
        hit = self._entries.get(request)
        if hit is None or self.clock.monotonic() - hit.built > self.max_age:
            self.misses += 1
            return None
        self._entries.move_to_end(request)
        self.hits += 1
        return hit

    def put(self, request: Hashable, entry: CachedChain) -> None:
        self._entries[request] = entry
        self._entries.move_to_end(request)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
