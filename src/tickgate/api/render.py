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
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
import msgspec
import numpy as np

from tickgate.analytics.black76 import Reason
from tickgate.analytics.engine import Computed
from tickgate.chains.atm import ChainWindow
from tickgate.clock import Clock
from tickgate.dhan.protocol import InstrumentKey
from tickgate.feed.quotes import QuoteSnapshot, QuoteStore

if TYPE_CHECKING:
    from starlette.types import Scope

NULL = b"null"
_PACKER = msgpack.Packer(use_bin_type=True)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_encode = msgspec.json.Encoder().encode  # NaN and infinities as null


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
        self._analytics: dict[int, bytes] = {}  # analytics version -> rendered push body
        self._analytics_text: dict[tuple[int, int], str] = {}  # (chain id, version) -> the whole message
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

    def analytics_body(self, computed: Computed, rate: float) -> bytes:
        """A chain's analytics for the push channel, ``"analytics": {…}, "legs": {"key": [...], "iv": [...],
        …}`` (columns: a third of the bytes of one object per leg), rendered once per recomputation (its
        version) for every client."""
        hit = self._analytics.get(computed.version)
        if hit is not None:
            return hit
        have = [i for i, key in enumerate(computed.keys) if key is not None]
        take = np.array(have, dtype=np.intp)
        legs: dict[str, list[Any]] = {"key": [str(computed.keys[i]) for i in have]}
        # Straight from the arrays to JSON by msgspec (NaN as null): the push renders this at every
        # recomputation of a chain, on the event loop, and the json module took several times as long.
        legs.update({name: values[take].tolist() for name, values in _leg_arrays(computed).items()})
        legs["reason"] = [_REASON_NAMES[r] for r in computed.analytics.reason[take].tolist()]
        body = b'"analytics":%s,"legs":%s' % (_encode(chain_analytics_dict(computed, rate)), _encode(legs))
        if len(self._analytics) >= 512:
            self._analytics.pop(next(iter(self._analytics)))
        self._analytics[computed.version] = body
        return body

    def analytics_text(self, chain: int, computed: Computed, rate: float) -> str:
        """The whole push message of a chain's analytics, as the text frame sends it: made once per chain
        and version, and shared by every client of that chain (a desk's screens of one watchlist entry),
        so a send costs no formatting or decoding of its own."""
        key = (chain, computed.version)
        hit = self._analytics_text.get(key)
        if hit is None:
            body = self.analytics_body(computed, rate)
            hit = (b'{"type":"analytics","chain":%d,%s}' % (chain, body)).decode()
            if len(self._analytics_text) >= 512:
                self._analytics_text.pop(next(iter(self._analytics_text)))
            self._analytics_text[key] = hit
        return hit

    def quote(self, key: InstrumentKey) -> bytes:
        """The key's quote as JSON, ``null`` when the store has never heard of it."""
        slot = self.store.slot_of(key)
        return NULL if slot is None else self.slot_json(slot)

    def leg(self, key: InstrumentKey | None) -> bytes:
        """A :class:`~tickgate.api.models.LegOut` (or ``null``)."""
        if key is None:
            return NULL
        return b'{"security_id":%d,"key":"%s","quote":%s,"analytics":null}' % (
            key.security_id,
            str(key).encode(),
            self.quote(key),
        )


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def chain_analytics_dict(computed: Computed, rate: float) -> dict[str, Any]:
    """A :class:`~tickgate.api.models.ChainAnalyticsOut` (NaN as null: JSON has no NaN)."""
    a = computed.analytics
    return {
        "spot": computed.spot,
        "forward": _num(a.forward),
        "forward_source": a.forward_source,
        "years_to_expiry": max(a.years, 0.0),
        "rate": rate,
        "atm_strike": _num(a.atm_strike),
        "atm_iv": _num(a.atm_iv),
        "pcr_oi": _num(a.pcr_oi),
        "pcr_volume": _num(a.pcr_volume),
        "max_pain": _num(a.max_pain),
        "max_pain_strikes": a.max_pain_strikes,
        "risk_reversal_25d": _num(a.risk_reversal_25d),
        "oi_change_calls": _num(a.oi_change_calls),
        "oi_change_puts": _num(a.oi_change_puts),
        "computed_at_version": computed.version,
    }


_REASON_NAMES = {int(r): r.name for r in Reason}


def _leg_arrays(computed: Computed) -> dict[str, np.ndarray]:
    """The per-leg analytics, by :class:`~tickgate.api.models.LegAnalyticsOut` field, in the engine's leg
    order."""
    a = computed.analytics
    g = a.greeks
    return {
        "iv": a.iv,
        "delta": g.delta,
        "gamma": g.gamma,
        "theta": g.theta,
        "vega": g.vega,
        "oi_change": a.oi_change,
    }


def leg_columns(computed: Computed) -> dict[str, list[Any]]:
    """Every leg's :class:`~tickgate.api.models.LegAnalyticsOut` fields, one list per field, in the engine's
    leg order (NaN as null)."""
    columns: dict[str, list[Any]] = {
        name: [_num(v) for v in values.tolist()] for name, values in _leg_arrays(computed).items()
    }
    columns["reason"] = [_REASON_NAMES[r] for r in computed.analytics.reason.tolist()]
    return columns


def leg_analytics(computed: Computed) -> list[bytes]:
    """Each leg's :class:`~tickgate.api.models.LegAnalyticsOut` as JSON, in the engine's leg order."""
    columns = leg_columns(computed)
    names = list(columns)
    return [
        _dumps(dict(zip(names, values, strict=True))).encode()
        for values in zip(*columns.values(), strict=True)
    ]


def chain_json(
    window: ChainWindow, renderer: QuoteRenderer, analytics: tuple[Computed, float] | None = None
) -> bytes:
    """An :class:`~tickgate.api.models.OptionChainResponse` without its closing ``,"watchlist_id":…}`` (that
    part is the caller's: it differs per user). With ``analytics`` (the engine's, and the rate), every leg
    and the chain carry theirs."""
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
    if analytics is None:
        per_leg: list[bytes] | None = None
        chain = NULL
    else:
        computed, rate = analytics
        per_leg = leg_analytics(computed)
        chain = _dumps(chain_analytics_dict(computed, rate)).encode()
    half = len(window.rows)

    def side(key: InstrumentKey | None, i: int) -> bytes:
        """A leg, with its analytics in place of the null the quote renderer leaves for them."""
        body = leg(key)
        return body if key is None or per_leg is None else body[: -len(b"null}")] + per_leg[i] + b"}"

    rows = b",".join(
        b'{"strike":%s,"atm":%s,"ce":%s,"pe":%s}'
        % (
            repr(float(r.strike)).encode(),
            b"true" if r.strike == atm else b"false",
            side(r.ce, i),
            side(r.pe, half + i),
        )
        for i, r in enumerate(window.rows)
    )
    return b'%s,"underlying":%s,"rows":[%s],"analytics":%s' % (
        head[:-1],
        leg(window.underlying.key),
        rows,
        chain,
    )


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
