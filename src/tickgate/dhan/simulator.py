"""A Dhan-compatible live-feed server on loopback: the thing tickgate's feed client is tested against.

Nobody here can reach Dhan, so this server speaks its real protocol (every byte comes from
:mod:`tickgate.dhan.protocol`), enforces its limits (from :class:`tickgate.config.FeedLimits`, nowhere else)
and misbehaves on request. Three audiences shape it:

* **in-process tests** — ``async with Simulator(...) as sim`` on an ephemeral port; every socket's
  subscriptions, counts and close reason are kept as plain records (:meth:`Simulator.view`,
  :meth:`Simulator.state`), and every fault is a method;
* **other processes** (chaos tests, benchmarks) — ``tickgate simulate`` prints ``SIMULATOR ws://…`` and
  answers a JSON control API on the same port (``GET /control/...``) plus ``GET /master.csv``;
* **load** — packets are built in vectorised numpy batches on a timer and written as ready-made WebSocket
  frames, so the server outruns any client it is pointed at and pings still flow.

Behaviour where Dhan documents nothing (decided here, stated once):

* a request that does not parse (bad JSON, unknown code, binary frame) is counted and ignored — unless the
  simulator is built with ``strict_requests=True``, then it gets Disconnect 814 and the socket is closed;
* security ids absent from the master are ignored and counted (Dhan's behaviour), and do not count
  against the per-socket limit; an unsubscribe removes the instrument whatever mode it was subscribed in
  (a mode mismatch is counted);
* re-subscribing a subscribed instrument changes its mode; PrevClose is sent only for instruments new to
  the socket;
* missing/wrong ``version``/``authType`` or no token → 808; unknown token → 809; expired token → 807;
  token of another client id → 810. A Disconnect packet is followed by a normal close (1000);
* a socket that has not answered a ping for ``ping_timeout`` seconds is closed with 1011, as websockets
  itself would; a client too slow to read (``max_buffer`` bytes queued) is skipped, not buffered forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import http
import json
import logging
import math
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from tickgate.clock import Clock
from tickgate.config import FeedLimits, get_settings
from tickgate.dhan.pricing import (
    REFERENCE_PRICES,
    AssetClass,
    InstrumentSpec,
    Kind,
    PriceModel,
    expiry_timestamp,
    fallback_price,
)
from tickgate.dhan.protocol import (
    DisconnectRequest,
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    RequestError,
    ResponseCode,
    disconnect_reason,
    encode_disconnect,
    parse_request,
)

if TYPE_CHECKING:
    from tickgate.instruments import Instrument, InstrumentRegistry

Array = np.ndarray[Any, np.dtype[Any]]
Selector = int | str | Iterable[int] | None
CorruptMode = Literal["mixed", "garble", "truncate"]
RefuseMode = Literal["503", "close"]

logger = logging.getLogger(__name__)


class _HandshakeNoise(logging.Filter):
    """Drop websockets' tracebacks for requests that are not WebSocket handshakes (HEAD, POST, probes,
    refused connections): expected on a port that also answers plain HTTP. Handler errors still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "opening handshake failed"


ws_logger = logging.getLogger(f"{__name__}.ws")
ws_logger.addFilter(_HandshakeNoise())

DEFAULT_TOKEN = "sim-access-token"
DEFAULT_CLIENT_ID = "1100000001"
DISCONNECT_CLOSE_CODE = 1000
KEEPALIVE_CLOSE_CODE = 1011


# ------------------------------------------------------------------------------------------------ universe


class Universe(Protocol):
    """Which instruments exist and how to price them: all the simulator needs from a scrip master."""

    def lookup_many(self, keys: Sequence[InstrumentKey]) -> list[InstrumentSpec | None]:
        """Spec per key, ``None`` where the master does not list it (Dhan ignores such ids)."""
        ...

    def reference_price(self, underlying: str) -> float | None:
        """A starting spot for an underlying, or ``None`` to let the simulator pick a stable default."""
        ...


def _configured_today() -> dt.date:
    return get_settings().make_clock().today()


class StaticUniverse:
    """A universe built by hand: tests describe exactly the few instruments they subscribe to."""

    def __init__(
        self, specs: Iterable[InstrumentSpec] = (), prices: Mapping[str, float] | None = None
    ) -> None:
        self._specs: dict[InstrumentKey, InstrumentSpec] = {}
        self._prices: dict[str, float] = dict(prices or {})
        for spec in specs:
            self.add(spec)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def keys(self) -> list[InstrumentKey]:
        return list(self._specs)

    def add(self, spec: InstrumentSpec) -> InstrumentKey:
        self._specs[spec.key] = spec
        return spec.key

    def set_price(self, underlying: str, price: float) -> None:
        self._prices[underlying] = price

    def add_spot(
        self,
        key: InstrumentKey,
        symbol: str,
        price: float,
        *,
        asset: AssetClass = AssetClass.EQUITY,
        tick: float = 0.05,
    ) -> InstrumentKey:
        """An index or cash instrument that *is* the underlying ``symbol`` at ``price``."""
        self._prices.setdefault(symbol, price)
        return self.add(InstrumentSpec(key, Kind.SPOT, symbol, asset, tick_size=tick))

    def add_future(
        self,
        key: InstrumentKey,
        underlying: str,
        expiry: dt.date,
        *,
        asset: AssetClass = AssetClass.INDEX,
        lot: int = 1,
        tick: float = 0.1,
    ) -> InstrumentKey:
        return self.add(
            InstrumentSpec(
                key,
                Kind.FUTURE,
                underlying,
                asset,
                expiry_ts=expiry_timestamp(expiry),
                tick_size=tick,
                lot_size=lot,
            )
        )

    def add_option(
        self,
        key: InstrumentKey,
        underlying: str,
        expiry: dt.date,
        strike: float,
        option_type: Literal["CE", "PE"],
        *,
        asset: AssetClass = AssetClass.INDEX,
        lot: int = 1,
        tick: float = 0.05,
    ) -> InstrumentKey:
        kind = Kind.CALL if option_type == "CE" else Kind.PUT
        return self.add(
            InstrumentSpec(
                key,
                kind,
                underlying,
                asset,
                strike=strike,
                expiry_ts=expiry_timestamp(expiry),
                tick_size=tick,
                lot_size=lot,
            )
        )

    def add_chain(
        self,
        underlying: str,
        expiry: dt.date,
        strikes: Iterable[float],
        *,
        segment: ExchangeSegment = ExchangeSegment.NSE_FNO,
        first_id: int,
        asset: AssetClass = AssetClass.INDEX,
        lot: int = 1,
        tick: float = 0.05,
    ) -> list[tuple[float, InstrumentKey, InstrumentKey]]:
        """CE and PE for each strike, security ids counting up from ``first_id``: [(strike, ce, pe)]."""
        rows = []
        sid = first_id
        for strike in strikes:
            ce = self.add_option(
                InstrumentKey(segment, sid), underlying, expiry, strike, "CE", asset=asset, lot=lot, tick=tick
            )
            pe = self.add_option(
                InstrumentKey(segment, sid + 1),
                underlying,
                expiry,
                strike,
                "PE",
                asset=asset,
                lot=lot,
                tick=tick,
            )
            rows.append((float(strike), ce, pe))
            sid += 2
        return rows

    def lookup(self, key: InstrumentKey) -> InstrumentSpec | None:
        return self._specs.get(key)

    def lookup_many(self, keys: Sequence[InstrumentKey]) -> list[InstrumentSpec | None]:
        return [self._specs.get(k) for k in keys]

    def reference_price(self, underlying: str) -> float | None:
        return self._prices.get(underlying, REFERENCE_PRICES.get(underlying))

    @classmethod
    def sample(cls, today: dt.date | None = None) -> StaticUniverse:
        """A small built-in market: NIFTY/BANKNIFTY/SENSEX, five NSE stocks, a NIFTY future and a weekly
        chain (24,000–28,000 every 50, ids 50000…), a CRUDEOIL future. Real index/equity ids."""
        today = today or _configured_today()
        weekly = today + dt.timedelta(days=(1 - today.weekday()) % 7 or 7)  # next Tuesday
        u = cls()
        idx, eq = ExchangeSegment.IDX_I, ExchangeSegment.NSE_EQ
        for sid, sym, price in (
            (13, "NIFTY", 26_000.0),
            (25, "BANKNIFTY", 59_000.0),
            (51, "SENSEX", 85_000.0),
        ):
            u.add_spot(InstrumentKey(idx, sid), sym, price, asset=AssetClass.INDEX)
        for sid, sym, price in (
            (2885, "RELIANCE", 1_480.0),
            (1333, "HDFCBANK", 990.0),
            (11536, "TCS", 3_100.0),
            (1594, "INFY", 1_550.0),
            (3045, "SBIN", 960.0),
        ):
            u.add_spot(InstrumentKey(eq, sid), sym, price)
        u.add_future(
            InstrumentKey(ExchangeSegment.NSE_FNO, 40000), "NIFTY", weekly + dt.timedelta(days=21), lot=65
        )
        u.add_chain("NIFTY", weekly, range(24_000, 28_001, 50), first_id=50_000, lot=65)
        u.add_future(
            InstrumentKey(ExchangeSegment.MCX_COMM, 430000),
            "CRUDEOIL",
            weekly + dt.timedelta(days=14),
            asset=AssetClass.COMMODITY,
            lot=100,
            tick=1.0,
        )
        return u


_KIND_ASSET: dict[str, tuple[Kind | None, AssetClass]] = {
    "INDEX": (Kind.SPOT, AssetClass.INDEX),
    "EQUITY": (Kind.SPOT, AssetClass.EQUITY),
    "FUTIDX": (Kind.FUTURE, AssetClass.INDEX),
    "OPTIDX": (None, AssetClass.INDEX),
    "FUTSTK": (Kind.FUTURE, AssetClass.EQUITY),
    "OPTSTK": (None, AssetClass.EQUITY),
    "FUTCOM": (Kind.FUTURE, AssetClass.COMMODITY),
    "OPTFUT": (None, AssetClass.COMMODITY),
    "OPTCOM": (None, AssetClass.COMMODITY),
    "FUTCUR": (Kind.FUTURE, AssetClass.CURRENCY),
    "OPTCUR": (None, AssetClass.CURRENCY),
}


def make_spec(
    key: InstrumentKey,
    *,
    exchange: str,
    segment: str,
    instrument: str,
    underlying: str,
    expiry: dt.date | None,
    strike: float | None,
    option_type: str | None,
    tick_size: float | None,
    lot_size: float | None,
) -> InstrumentSpec:
    """Scrip-master fields → price-model spec. An option with no option type is priced as a call."""
    kind, asset = _KIND_ASSET.get(instrument, (Kind.SPOT, AssetClass.EQUITY))
    if kind is None:
        kind = Kind.PUT if option_type == "PE" else Kind.CALL
    expiry_ts = None
    if expiry is not None and kind is not Kind.SPOT:
        closes = "MCX" if exchange == "MCX" else ("CUR" if segment == "C" else exchange)
        expiry_ts = expiry_timestamp(expiry, exchange=closes)
    return InstrumentSpec(
        key,
        kind,
        underlying,
        asset,
        strike=strike or 0.0,
        expiry_ts=expiry_ts,
        tick_size=tick_size or 0.05,
        lot_size=max(int(lot_size or 1), 1),
    )


def spec_from_instrument(inst: Instrument) -> InstrumentSpec:
    """Registry row → price-model spec. Derivatives link to their underlying by symbol, not by id (the
    detailed file's underlying ids are the exchange's own tokens)."""
    return make_spec(
        inst.key,
        exchange=inst.exchange,
        segment=inst.segment,
        instrument=inst.instrument,
        underlying=inst.underlying_symbol or inst.symbol,
        expiry=inst.expiry,
        strike=inst.strike,
        option_type=inst.option_type,
        tick_size=inst.tick_size,
        lot_size=inst.lot_size,
    )


_FRAME_COLUMNS = ("key", "exch", "seg", "instrument", "symbol", "expiry", "strike", "opt", "tick", "lot")


class RegistryUniverse:
    """The universe of a loaded scrip master (:class:`tickgate.instruments.InstrumentRegistry`).

    Lookups read the registry's columnar frame directly (one ``searchsorted`` per subscribe message)
    instead of materialising ``Instrument`` objects: 25,000 subscriptions must resolve in well under a
    second. If the frame's columns ever change, it falls back to ``registry.get_many``.
    """

    def __init__(self, registry: InstrumentRegistry, today: dt.date | None = None) -> None:
        self.registry = registry
        self.today = today
        self._specs: dict[InstrumentKey, InstrumentSpec | None] = {}
        self._table: dict[str, list[Any]] | None = None
        self._sorted: tuple[Array, Array] | None = None
        frame = registry.frame
        if all(name in frame.columns for name in _FRAME_COLUMNS):
            self._table = {name: frame[name].to_list() for name in _FRAME_COLUMNS[1:]}
            keys = frame["key"].to_numpy()
            order = np.argsort(keys, kind="stable")
            self._sorted = (keys[order], order)

    @classmethod
    def load(cls, source: Path | bytes, today: dt.date | None = None) -> RegistryUniverse:
        from tickgate.instruments import InstrumentRegistry

        return cls(InstrumentRegistry.load(source, today=today), today)

    def lookup_many(self, keys: Sequence[InstrumentKey]) -> list[InstrumentSpec | None]:
        cache = self._specs
        missing = [k for k in dict.fromkeys(keys) if k not in cache]
        if missing:
            if self._table is None or self._sorted is None:
                for key, inst in zip(missing, self.registry.get_many(missing), strict=True):
                    cache[key] = None if inst is None else spec_from_instrument(inst)
            else:
                self._resolve_columnar(missing)
        return [cache[k] for k in keys]

    def _resolve_columnar(self, missing: list[InstrumentKey]) -> None:
        assert self._table is not None
        assert self._sorted is not None
        sorted_keys, order = self._sorted
        wanted = np.fromiter(
            ((int(k.segment) << 32) | k.security_id for k in missing), np.int64, len(missing)
        )
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), max(len(sorted_keys) - 1, 0))
        found = (sorted_keys[pos] == wanted) if len(sorted_keys) else np.zeros(len(wanted), dtype=bool)
        rows = order[pos].tolist()
        c = self._table
        for key, hit, row in zip(missing, found.tolist(), rows, strict=True):
            if not hit:
                self._specs[key] = None
                continue
            self._specs[key] = make_spec(
                key, exchange=c["exch"][row], segment=c["seg"][row], instrument=c["instrument"][row],
                underlying=c["symbol"][row], expiry=c["expiry"][row], strike=c["strike"][row],
                option_type=c["opt"][row], tick_size=c["tick"][row], lot_size=c["lot"][row],
            )  # fmt: skip

    def reference_price(self, underlying: str) -> float | None:
        """The index table, else the median listed strike of the nearest option expiry (≈ ATM)."""
        known = REFERENCE_PRICES.get(underlying)
        if known is not None:
            return known
        try:
            expiries = self.registry.option_expiries(underlying, self.today)
            strikes = self.registry.strikes(underlying, expiries[0]) if expiries else []
        except LookupError:
            return None
        if not strikes:
            return None
        return float(np.median([row.strike for row in strikes]))


# ------------------------------------------------------------------------------------------------- records


def _keys_json(subscriptions: Mapping[InstrumentKey, FeedMode]) -> dict[str, str]:
    return {str(key): mode.name for key, mode in subscriptions.items()}


@dataclass(slots=True)
class SocketRecord:
    """Everything the simulator saw on one WebSocket, kept after it closes (minus the subscription map)."""

    id: int
    client_id: str
    remote: str
    opened_at: float
    authenticated: bool = False
    closed_at: float | None = None
    close_reason: str | None = None  # auth:809, disconnect:805, dropped, keepalive_timeout, client_request …
    disconnect_code: int | None = None  # reason code of the Disconnect packet the server sent, if any
    close_code: int | None = None  # WebSocket close code once closed (1006: no close frame)
    subscriptions: dict[InstrumentKey, FeedMode] = field(default_factory=dict)
    final_subscriptions: int = 0
    max_subscriptions: int = 0
    messages: int = 0
    subscribe_messages: int = 0
    unsubscribe_messages: int = 0
    instruments_received: int = 0
    max_message_instruments: int = 0
    unknown_instruments: int = 0
    mode_mismatches: int = 0
    malformed: int = 0
    last_error: str | None = None
    packets_sent: Counter[int] = field(default_factory=Counter)
    frames_sent: int = 0
    bytes_sent: int = 0
    corrupt_frames: int = 0
    backpressure_skips: int = 0
    packets_withheld: int = 0  # owed by the rate but not sent: stalled, silent or backpressured
    pings_sent: int = 0
    pongs_received: int = 0
    stalled: bool = False
    silent: bool = False

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def to_json(self, *, subscriptions: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("subscriptions", "packets_sent")
        }
        out["open"] = self.open
        out["subscription_count"] = len(self.subscriptions)
        out["packets_sent"] = {str(code): n for code, n in sorted(self.packets_sent.items())}
        if subscriptions:
            out["subscriptions"] = _keys_json(self.subscriptions)
        return out


@dataclass(frozen=True, slots=True)
class Breach:
    """A client went over one of Dhan's limits (the chaos suite requires none)."""

    kind: Literal["sockets_per_account", "instruments_per_message", "instruments_per_socket"]
    at: float
    client_id: str
    socket_id: int
    value: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at,
            "client_id": self.client_id,
            "socket_id": self.socket_id,
            "value": self.value,
            "limit": self.limit,
        }


@dataclass(slots=True)
class SimulatorStats:
    """Server-wide counters."""

    connections: int = 0
    auth_failures: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    malformed: int = 0
    unknown_instruments: int = 0
    mode_mismatches: int = 0
    packets_sent: Counter[int] = field(default_factory=Counter)
    frames_sent: int = 0
    bytes_sent: int = 0
    corrupt_frames: int = 0
    backpressure_skips: int = 0
    packets_withheld: int = 0
    ticks: int = 0
    max_tick_lag_s: float = 0.0  # worst lateness of the batch timer since start: event-loop stalls
    recent_tick_lag_s: float = 0.0  # the same over the last full second
    emit_errors: int = 0
    busy_s: float = 0.0
    emit_rate_pps: float = 0.0  # market packets per second over the last second
    max_sockets_per_client: dict[str, int] = field(default_factory=dict)
    max_instruments_per_socket: int = 0
    max_instruments_per_message: int = 0

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["auth_failures"] = {str(k): v for k, v in sorted(self.auth_failures.items())}
        out["packets_sent"] = {str(k): v for k, v in sorted(self.packets_sent.items())}
        out["max_sockets_per_client"] = dict(self.max_sockets_per_client)
        return out


# ------------------------------------------------------------------------------------------------- framing


@functools.lru_cache(maxsize=512)
def ws_header(length: int) -> bytes:
    """Header of an unmasked, final binary WebSocket frame of ``length`` payload bytes, as websockets
    itself serialises it: data frames are prebuilt in bulk, but the framing stays websockets'."""
    frame = Frame(Opcode.BINARY, bytes(length)).serialize(mask=False, extensions=[])
    return frame[: len(frame) - length]


def ws_frame(payload: bytes) -> bytes:
    return ws_header(len(payload)) + payload


class _SimConnection(ServerConnection):
    """A server connection that can go *silent*: every outgoing byte (pongs, close frames) is dropped, as
    if the server had hung, while incoming frames are still read so a closed TCP connection is noticed."""

    silent: bool = False

    def send_data(self) -> None:
        if self.silent:
            for _ in self.protocol.data_to_send():
                pass
            return
        super().send_data()


class _Socket:
    """Server-side state of one connection (the public part is ``record``)."""

    def __init__(self, record: SocketRecord, ws: _SimConnection, token: str) -> None:
        self.record = record
        self.ws = ws
        self.token = token
        self.closing = False
        self.admitted = False
        self.last_pong = 0.0
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.keepalive: asyncio.Task[None] | None = None
        # What this socket streams, by packet kind, kept in step with ``record.subscriptions`` one key at a
        # time (:meth:`subscribed`, :meth:`unsubscribed`): rebuilding it from all 5,000 subscriptions after
        # every message cost the simulator most of a core while a client added chains by the hundred.
        self._kinds = {code: _SlotSet() for code in _STREAM_CODES}

    @property
    def streaming(self) -> bool:
        """Owed market data by the rate (open, admitted, not being closed, subscribed to something)."""
        return self.admitted and not self.closing and bool(self.record.subscriptions)

    @property
    def writable(self) -> bool:
        return not self.closing and not self.ws.silent and self.ws.protocol.state is State.OPEN

    def buffered(self) -> int:
        return self.ws.transport.get_write_buffer_size()

    def subscribed(
        self, changes: Sequence[tuple[int, FeedMode | None]], mode: FeedMode, model: PriceModel
    ) -> None:
        """``(slot, previous mode or None)`` pairs now subscribed in ``mode``."""
        for slot, old in changes:
            if old is not None:
                self._drop(slot, old)
            self._kinds[_MODE_CODE[mode]].add(slot)
        if mode is not FeedMode.TICKER:
            slots = np.fromiter((slot for slot, _ in changes), dtype=np.int64)
            oi = self._kinds[_OI]
            for slot in slots[model.is_derivative(slots)].tolist() if len(slots) else ():
                oi.add(slot)

    def unsubscribed(self, changes: Sequence[tuple[int, FeedMode]]) -> None:
        for slot, old in changes:
            self._drop(slot, old)

    def _drop(self, slot: int, mode: FeedMode) -> None:
        self._kinds[_MODE_CODE[mode]].discard(slot)
        self._kinds[_OI].discard(slot)

    def sample(self, count: int, rng: np.random.Generator, oi_share: float) -> list[tuple[int, Array]]:
        """``count`` random (code, slots) draws over this socket's subscriptions, each instrument in its
        subscribed mode; quote/full derivatives also get OI packets (``oi_share`` of their draws)."""
        sizes = {code: len(kind) for code, kind in self._kinds.items()}
        share = oi_share if sizes[_OI] else 0.0
        weights = {
            _TICKER: float(sizes[_TICKER]),
            _QUOTE: sizes[_QUOTE] * (1 - share),
            _FULL: sizes[_FULL] * (1 - share),
            _OI: (sizes[_QUOTE] + sizes[_FULL]) * share,
        }
        kept = [code for code, w in weights.items() if w > 0 and sizes[code]]
        if not kept:
            return []
        w = np.array([weights[code] for code in kept], dtype=np.float64)
        counts = rng.multinomial(count, w / w.sum())
        out = []
        for code, n in zip(kept, counts.tolist(), strict=True):
            if n:
                slots = self._kinds[code].view()
                out.append((code, slots[rng.integers(0, len(slots), size=n)]))
        return out


_TICKER, _QUOTE, _FULL, _OI = (
    int(c) for c in (ResponseCode.TICKER, ResponseCode.QUOTE, ResponseCode.FULL, ResponseCode.OI)
)
_STREAM_CODES = (_TICKER, _QUOTE, _FULL, _OI)
_MODE_CODE = {FeedMode.TICKER: _TICKER, FeedMode.QUOTE: _QUOTE, FeedMode.FULL: _FULL}


class _SlotSet:
    """Price-model slots with O(1) add and remove and a contiguous array to draw from."""

    def __init__(self) -> None:
        self._array = np.empty(64, dtype=np.int64)
        self._at: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._at)

    def add(self, slot: int) -> None:
        if slot in self._at:
            return
        n = len(self._at)
        if n == len(self._array):
            self._array = np.concatenate([self._array, np.empty(n, dtype=np.int64)])
        self._array[n] = slot
        self._at[slot] = n

    def discard(self, slot: int) -> None:
        i = self._at.pop(slot, None)
        if i is None:
            return
        last = len(self._at)
        if i != last:  # the last one fills the hole
            moved = int(self._array[last])
            self._array[i] = moved
            self._at[moved] = i

    def view(self) -> Array:
        return self._array[: len(self._at)]


# ----------------------------------------------------------------------------------------------- simulator


class Simulator:
    """The fake Dhan feed server (see the module docstring); record times are epochs of its clock.

    ``master`` (path or bytes) is served at ``/master.csv`` and, unless ``universe`` is given, loaded with
    the instrument registry to decide which ids exist; with neither, :meth:`StaticUniverse.sample` is used.
    ``credentials`` maps client id → valid access token (default: ``{client_id: token}``). ``limits``
    defaults to the settings' :class:`FeedLimits`. ``rate`` is market packets per second across all
    sockets, spread over subscribed instruments; ``stack`` packets share one frame. ``tick_interval`` is
    the batch period. ``max_buffer`` bytes queued to a slow client make it skip batches (counted as
    withheld). ``oi_share`` of quote/full draws on derivatives become OI packets. ``clock`` (the one clock,
    default: the configured one) feeds LTT, time to expiry and every record time, and ``today`` (default: the
    clock's date) is the day the universe counts expiries from; ``vol_scale`` speeds up the random walk.
    """

    def __init__(
        self,
        *,
        universe: Universe | None = None,
        master: Path | str | bytes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        client_id: str = DEFAULT_CLIENT_ID,
        credentials: Mapping[str, str] | None = None,
        limits: FeedLimits | None = None,
        rate: float = 1_000.0,
        stack: int = 1,
        tick_interval: float = 0.01,
        ping_interval: float = 10.0,
        ping_timeout: float = 40.0,
        close_timeout: float = 5.0,
        corrupt_pct: float = 0.0,
        corrupt_mode: CorruptMode = "mixed",
        strict_requests: bool = False,
        latency_probe: bool = False,
        oi_share: float = 0.1,
        max_buffer: int = 4 * 2**20,
        seed: int = 0,
        vol_scale: float = 1.0,
        history_limit: int = 10_000,
        journal_limit: int = 10_000,
        today: dt.date | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else get_settings().make_clock()
        today = today or self.clock.today()
        self.host = host
        self.requested_port = port
        self.limits = limits if limits is not None else get_settings().limits
        self.master_bytes: bytes | None = None
        self.master_path: Path | None = None
        if master is not None:
            if isinstance(master, bytes):
                self.master_bytes = master
            else:
                self.master_path = Path(master)
                self.master_bytes = self.master_path.read_bytes()
        if universe is None:
            universe = (
                RegistryUniverse.load(self.master_bytes, today)
                if self.master_bytes is not None
                else StaticUniverse.sample(today)
            )
        self.universe = universe
        self.stats = SimulatorStats()
        self.breaches: list[Breach] = []
        self.faults: deque[dict[str, Any]] = deque(maxlen=history_limit)
        self.history: deque[SocketRecord] = deque(maxlen=history_limit)
        self.journal: deque[tuple[int, float, int, str, str, tuple[InstrumentKey, ...]]] = deque(
            maxlen=journal_limit
        )
        self.model = PriceModel(seed=seed, vol_scale=vol_scale, clock=self.clock.timestamp)
        # Benchmarks only: quote/full packets carry their send time (µs mod 2^32) in ``volume``.
        self.model.stamp_volume = latency_probe
        self.rng = np.random.default_rng(seed + 1)
        self.client_id = client_id
        self._tokens: dict[str, str] = {}  # valid token → client id
        self._expired: dict[str, str] = {}  # expired token → client id
        for cid, tok in (credentials or {client_id: token}).items():
            self._tokens[tok] = cid
        self.rate = 0.0
        self.stack = 1
        self.set_rate(rate, stack)
        self.tick_interval = tick_interval
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.corrupt_pct = 0.0
        self.corrupt_mode: CorruptMode = "mixed"
        if corrupt_pct:
            self.corrupt(corrupt_pct, corrupt_mode)
        self.strict_requests = strict_requests
        self.oi_share = oi_share
        self.max_buffer = max_buffer
        self.refuse_until = 0.0
        self.refuse_mode: RefuseMode = "503"

        self._journal_seq = 0
        self._sockets: dict[int, _Socket] = {}  # every live connection, authenticated or not
        self._next_id = 1
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._carry = 0.0
        self._rate_mark = (0.0, 0)
        self._emitted = 0
        self._etag = hashlib.sha1(self.master_bytes).hexdigest() if self.master_bytes is not None else ""
        self._master_mtime = self.clock.timestamp()
        self.port = 0

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> Simulator:
        """Listen (port 0 → an ephemeral port, see :attr:`port`) and start the stream and watchdog loops."""
        if self._server is not None:
            return self
        self._server = await serve(
            self._handler,
            self.host,
            self.requested_port,
            process_request=self._process_request,
            compression=None,  # frames are prebuilt: no per-message deflate
            ping_interval=None,  # keepalive is ours (stall/silent faults need control over it)
            ping_timeout=None,
            close_timeout=self.close_timeout,
            max_size=2**20,
            create_connection=_SimConnection,
            logger=ws_logger,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = int(sockname[1])
        self._loops = [
            asyncio.create_task(self._stream_loop(), name="simulator-stream"),
            asyncio.create_task(self._watchdog_loop(), name="simulator-watchdog"),
        ]
        return self

    async def close(self) -> None:
        """Stop streaming, close every socket (1001 going away) and the listener."""
        if self._server is None:
            return
        for task in self._loops:
            task.cancel()
        for sock in list(self._sockets.values()):
            for handle in sock.timers.values():
                handle.cancel()
            if not sock.closing:
                sock.closing = True
                sock.record.close_reason = sock.record.close_reason or "shutdown"
            if sock.ws.silent:
                sock.ws.transport.abort()
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(asyncio.shield(self._server.wait_closed()), self.close_timeout + 1)
        except TimeoutError:  # a client that never reads can hold a close handshake forever
            for sock in list(self._sockets.values()):
                sock.ws.transport.abort()
            await self._server.wait_closed()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._server = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base WebSocket URL (``ws://host:port``): the ``feed_url`` setting of a client under test."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def master_url(self) -> str:
        return f"{self.http_url}/master.csv"

    def feed_url(self, token: str | None = None, client_id: str | None = None, **extra: str) -> str:
        """A full Dhan-style connect URL (defaults: the first valid credentials)."""
        if token is None or client_id is None:
            first_token, first_client = next(iter(self._tokens.items()), ("", self.client_id))
            token = first_token if token is None else token
            client_id = first_client if client_id is None else client_id
        query = {"version": "2", "token": token, "clientId": client_id, "authType": "2", **extra}
        return f"{self.url}/?{urlencode(query)}"

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------- records

    def open_sockets(self, client_id: str | None = None) -> list[SocketRecord]:
        """Records of authenticated sockets not being closed, oldest first."""
        return [s.record for s in self._live(client_id)]

    def _live(self, client_id: str | None = None) -> list[_Socket]:
        """Sockets that count against the limits: admitted, not being closed by us, and not closing from
        the client's side either (a client that has had its close frame answered may reopen at once)."""
        return [
            s
            for s in self._sockets.values()
            if s.admitted
            and not s.closing
            and s.ws.protocol.state is State.OPEN
            and (client_id is None or s.record.client_id == client_id)
        ]

    def socket(self, socket_id: int) -> SocketRecord:
        for record in self.history:
            if record.id == socket_id:
                return record
        raise KeyError(f"no socket {socket_id}")

    def view(self) -> dict[int, dict[InstrumentKey, FeedMode]]:
        """What each open socket is subscribed to right now: ``{socket_id: {key: mode}}``."""
        return {s.record.id: dict(s.record.subscriptions) for s in self._live()}

    def view_json(self) -> dict[str, dict[str, str]]:
        return {str(sid): _keys_json(subs) for sid, subs in self.view().items()}

    def last_values(self, key: InstrumentKey) -> dict[str, float | int] | None:
        """The latest values sent for ``key`` (f32-rounded like the wire): what a quote store should hold."""
        return self.model.snapshot(key)

    def journal_json(self, since: int = 0) -> list[dict[str, Any]]:
        """Subscription changes with sequence number > ``since`` (ops: subscribe, unsubscribe, close)."""
        return [
            {"seq": seq, "at": at, "socket": sid, "op": op, "mode": mode, "keys": [str(k) for k in keys]}
            for seq, at, sid, op, mode, keys in self.journal
            if seq > since
        ]

    def state(self, *, subscriptions: bool = True, history: bool = True) -> dict[str, Any]:
        """Everything recorded, JSON-able (``GET /control/state``)."""
        return {
            "url": self.url,
            "time": self.clock.timestamp(),
            "clock": self.clock.describe(),
            "config": {
                "rate": self.rate,
                "stack": self.stack,
                "corrupt_pct": self.corrupt_pct,
                "corrupt_mode": self.corrupt_mode,
                "tick_interval": self.tick_interval,
                "ping_interval": self.ping_interval,
                "ping_timeout": self.ping_timeout,
                "strict_requests": self.strict_requests,
                "limits": self.limits.model_dump(),
                "client_ids": sorted(set(self._tokens.values()) | set(self._expired.values())),
            },
            "refusing_for": self.refusing_for,
            "refuse_mode": self.refuse_mode,
            "sockets": {str(s.id): s.to_json(subscriptions=subscriptions) for s in self.open_sockets()},
            "history": [r.to_json(subscriptions=False) for r in self.history] if history else [],
            "max_sockets_per_client": dict(self.stats.max_sockets_per_client),
            "max_instruments_per_socket": self.stats.max_instruments_per_socket,
            "max_instruments_per_message": self.stats.max_instruments_per_message,
            "breaches": [b.to_json() for b in self.breaches],
            "counters": self.stats.to_json(),
            "faults": list(self.faults),
            "journal_seq": self._journal_seq,
        }

    async def wait_for(
        self, predicate: Callable[[], object], timeout: float = 5.0, message: str = "condition"
    ) -> None:
        """Poll ``predicate`` until truthy; ``TimeoutError`` naming ``message`` after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise TimeoutError(f"simulator: timed out after {timeout}s waiting for {message}")
            await asyncio.sleep(0.005)

    def _journal(self, sock: _Socket, op: str, mode: str, keys: tuple[InstrumentKey, ...]) -> None:
        self._journal_seq += 1
        self.journal.append((self._journal_seq, self.clock.timestamp(), sock.record.id, op, mode, keys))

    def _fault(self, kind: str, sockets: list[int] | None = None, **params: Any) -> None:
        entry: dict[str, Any] = {"at": self.clock.timestamp(), "kind": kind, **params}
        if sockets is not None:
            entry["sockets"] = sockets
        self.faults.append(entry)

    def _breach(self, kind: Any, sock: _Socket, value: int, limit: int) -> None:
        breach = Breach(kind, self.clock.timestamp(), sock.record.client_id, sock.record.id, value, limit)
        self.breaches.append(breach)
        logger.warning("limit breach: %s", breach)

    # ------------------------------------------------------------------------------------ faults

    def _select(self, selector: Selector, client_id: str | None = None) -> list[_Socket]:
        live = self._live(client_id)
        if selector is None or selector == "all":
            return live
        if isinstance(selector, int):
            return [s for s in live if s.record.id == selector]
        if isinstance(selector, str):
            if selector.isdigit():
                return [s for s in live if s.record.id == int(selector)]
            if selector == "oldest":
                return live[:1]
            if selector == "newest":
                return live[-1:]
            if selector == "random":
                return [live[int(self.rng.integers(len(live)))]] if live else []
            raise ValueError(
                f"socket selector must be an id, all, oldest, newest or random; got {selector!r}"
            )
        wanted = set(selector)
        return [s for s in live if s.record.id in wanted]

    def drop(self, selector: Selector = None) -> list[int]:
        """Abort the TCP connection of the selected sockets: no Disconnect packet, no close frame."""
        chosen = self._select(selector)
        for sock in chosen:
            self._mark_closing(sock, "dropped")
            sock.ws.transport.abort()
        ids = [s.record.id for s in chosen]
        self._fault("drop", ids)
        return ids

    def disconnect(self, selector: Selector = None, code: int = 800) -> list[int]:
        """Send Disconnect(``code``: 805, 807, 800 …) to the selected sockets, then close them."""
        chosen = self._select(selector)
        for sock in chosen:
            self._kick(sock, code)
        ids = [s.record.id for s in chosen]
        self._fault("disconnect", ids, code=code)
        return ids

    def corrupt(self, pct: float, mode: CorruptMode = "mixed") -> None:
        """Corrupt ``pct`` % of market-data frames from now on: ``garble`` a packet length (< 8 or past the
        frame end), ``truncate`` the frame mid-packet, or ``mixed`` (either, 50/50). 0 turns it off."""
        if not 0 <= pct <= 100:
            raise ValueError(f"corrupt percentage must be within 0..100, got {pct}")
        if mode not in ("mixed", "garble", "truncate"):
            raise ValueError(f"corrupt mode must be mixed, garble or truncate, got {mode!r}")
        self.corrupt_pct = float(pct)
        self.corrupt_mode = mode
        self._fault("corrupt", pct=pct, mode=mode)

    def stall(self, selector: Selector = None, seconds: float | None = None) -> list[int]:
        """Stop sending data to the selected sockets (pings and pongs continue) for ``seconds`` or until
        :meth:`resume`."""
        return self._suspend("stall", selector, seconds)

    def silence(self, selector: Selector = None, seconds: float | None = None) -> list[int]:
        """Make the selected sockets go dead: no data, no pings, no pongs (incoming frames are still read and
        requests still recorded). The client must notice by itself."""
        return self._suspend("silence", selector, seconds)

    def _suspend(self, kind: str, selector: Selector, seconds: float | None) -> list[int]:
        chosen = self._select(selector)
        loop = asyncio.get_running_loop()
        for sock in chosen:
            if kind == "stall":
                sock.record.stalled = True
            else:
                sock.record.silent = True
                sock.ws.silent = True
            old = sock.timers.pop(kind, None)
            if old is not None:
                old.cancel()
            if seconds is not None:
                sock.timers[kind] = loop.call_later(seconds, self._resume_one, sock, kind)
        ids = [s.record.id for s in chosen]
        self._fault(kind, ids, seconds=seconds)
        return ids

    def resume(self, selector: Selector = None) -> list[int]:
        """End stalls and silences of the selected sockets."""
        chosen = self._select(selector)
        for sock in chosen:
            for kind in ("stall", "silence"):
                self._resume_one(sock, kind)
        ids = [s.record.id for s in chosen]
        self._fault("resume", ids)
        return ids

    def _resume_one(self, sock: _Socket, kind: str) -> None:
        handle = sock.timers.pop(kind, None)
        if handle is not None:
            handle.cancel()
        if kind == "stall":
            sock.record.stalled = False
        elif sock.record.silent:
            sock.record.silent = False
            sock.ws.silent = False
            sock.last_pong = asyncio.get_running_loop().time()  # it was us who did not ping

    def refuse(self, seconds: float, mode: RefuseMode = "503") -> None:
        """Refuse new feed connections for ``seconds``: HTTP 503 (``"503"``) or an immediate TCP abort
        (``"close"``). Control and master requests are still answered. 0 lifts it."""
        if mode not in ("503", "close"):
            raise ValueError(f"refuse mode must be 503 or close, got {mode!r}")
        self.refuse_until = time.monotonic() + max(seconds, 0.0)
        self.refuse_mode = mode
        self._fault("refuse", seconds=seconds, mode=mode)

    @property
    def refusing_for(self) -> float:
        """Seconds left of an injected refusal of new connections (0 when accepting)."""
        return max(0.0, self.refuse_until - time.monotonic())

    def expire_token(self, client_id: str | None = None) -> list[int]:
        """Expire the valid tokens (of ``client_id``, default all): their sockets get Disconnect 807 and
        new connections with them are answered 807 until :meth:`set_token` issues a new one."""
        expired = [t for t, cid in self._tokens.items() if client_id is None or cid == client_id]
        for token in expired:
            self._expired[token] = self._tokens.pop(token)
        chosen = [s for s in self._live() if s.token in self._expired]
        for sock in chosen:
            self._kick(sock, 807)
        ids = [s.record.id for s in chosen]
        self._fault("expire_token", ids, client_id=client_id)
        return ids

    def set_token(self, token: str, client_id: str | None = None) -> None:
        """Issue a new valid access token (daily rollover). Earlier tokens stay valid until expired."""
        if not token:
            raise ValueError("token must not be empty")
        self._expired.pop(token, None)
        self._tokens[token] = client_id or self.client_id
        self._fault("set_token", client_id=client_id or self.client_id)

    def set_rate(self, rate: float, stack: int | None = None) -> None:
        """Market packets per second across all sockets (0 pauses streaming) and packets per frame."""
        if not (rate >= 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if stack is not None:
            if not 1 <= stack <= 400:
                raise ValueError(f"stack must be within 1..400 packets per frame, got {stack}")
            self.stack = int(stack)
        self.rate = float(rate)

    def set_price(self, underlying: str, price: float) -> None:
        """Move an underlying (and so its futures and options) to ``price`` now."""
        self.model.set_underlying_price(underlying, price)

    def inject(self, selector: Selector, payload: bytes) -> list[int]:
        """Send raw bytes as one binary frame (heartbeats, unknown codes, hand-made corrupt packets)."""
        chosen = [s for s in self._select(selector) if s.writable]
        frame = ws_frame(payload)
        for sock in chosen:
            sock.ws.transport.write(frame)
            sock.record.frames_sent += 1
            sock.record.bytes_sent += len(frame)
        ids = [s.record.id for s in chosen]
        self._fault("inject", ids, bytes=len(payload))
        return ids

    # ---------------------------------------------------------------------------------- connections

    def _mark_closing(self, sock: _Socket, reason: str, code: int | None = None) -> bool:
        """First close decision wins; returns False if the socket was already on its way out."""
        if sock.closing:
            return False
        sock.closing = True
        sock.record.close_reason = reason
        if code is not None:
            sock.record.disconnect_code = code
        return True

    def _kick(self, sock: _Socket, code: int) -> None:
        """Send Disconnect(``code``) and close: how Dhan ends a socket it objects to."""
        if not self._mark_closing(sock, f"disconnect:{code}", code):
            return
        if sock.ws.silent:
            sock.ws.silent = False
        if sock.ws.protocol.state is State.OPEN:
            frame = ws_frame(encode_disconnect(code))
            sock.ws.transport.write(frame)
            sock.record.packets_sent[ResponseCode.DISCONNECT] += 1
            sock.record.frames_sent += 1
            sock.record.bytes_sent += len(frame)
            self.stats.packets_sent[ResponseCode.DISCONNECT] += 1
        self._spawn(sock.ws.close(DISCONNECT_CLOSE_CODE, disconnect_reason(code)), f"kick-{sock.record.id}")

    def _authenticate(self, request: Request) -> tuple[str, str, int | None]:
        """(client id, token, Disconnect reason or None)."""
        query = parse_qs(urlsplit(request.path).query)

        def param(name: str) -> str:
            return query.get(name, [""])[-1]

        token, client_id = param("token"), param("clientId")
        if param("version") != "2" or param("authType") != "2" or not token:
            return client_id, token, 808
        if token in self._expired:
            return client_id, token, 807
        owner = self._tokens.get(token)
        if owner is None:
            return client_id, token, 809
        if client_id != owner:
            return client_id, token, 810
        return client_id, token, None

    async def _handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _SimConnection)
        assert ws.request is not None
        client_id, token, failure = self._authenticate(ws.request)
        remote = ws.remote_address
        record = SocketRecord(
            self._next_id, client_id, f"{remote[0]}:{remote[1]}" if remote else "?", self.clock.timestamp()
        )
        self._next_id += 1
        sock = _Socket(record, ws, token)
        self._sockets[record.id] = sock
        self.history.append(record)
        self.stats.connections += 1
        try:
            if failure is not None:
                self.stats.auth_failures[failure] += 1
                self._kick(sock, failure)
                record.close_reason = f"auth:{failure}"
                await ws.wait_closed()
                return
            record.authenticated = True
            self._admit(sock)
            sock.keepalive = asyncio.create_task(self._keepalive(sock), name=f"keepalive-{record.id}")
            async for message in ws:
                if not sock.closing:
                    self._on_message(sock, message)
                await asyncio.sleep(0)  # queued requests are handled back to back otherwise: let pings run
        except ConnectionClosed:
            pass
        finally:
            await self._finalize(sock)

    def _admit(self, sock: _Socket) -> None:
        """Count the socket against its client id; past the limit the *oldest* ones get 805."""
        cid = sock.record.client_id
        peers = self._live(cid)
        sock.admitted = True
        sock.last_pong = asyncio.get_running_loop().time()
        count = len(peers) + 1
        stats = self.stats
        stats.max_sockets_per_client[cid] = max(stats.max_sockets_per_client.get(cid, 0), count)
        limit = self.limits.sockets_per_account
        if count > limit:
            self._breach("sockets_per_account", sock, count, limit)
            for oldest in peers[: count - limit]:
                self._kick(oldest, 805)

    async def _finalize(self, sock: _Socket) -> None:
        record = sock.record
        if sock.keepalive is not None:
            sock.keepalive.cancel()
        for handle in sock.timers.values():
            handle.cancel()
        sock.timers.clear()
        if not sock.closing:
            sock.closing = True
            record.close_reason = "client_closed"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sock.ws.wait_closed(), self.close_timeout + 1)
        record.close_code = sock.ws.close_code if sock.ws.close_code is not None else 1006
        record.closed_at = self.clock.timestamp()
        if record.subscriptions:  # (a disconnect request has already dropped and counted them)
            record.final_subscriptions = len(record.subscriptions)
            self._journal(sock, "close", "", ())
        record.subscriptions = {}
        record.stalled = record.silent = False
        self._sockets.pop(record.id, None)

    async def _keepalive(self, sock: _Socket) -> None:
        """Ping every ``ping_interval`` (not while silent); the watchdog enforces ``ping_timeout``."""
        loop = asyncio.get_running_loop()

        def on_pong(waiter: asyncio.Future[float]) -> None:
            if not waiter.cancelled() and waiter.exception() is None:
                sock.last_pong = loop.time()
                sock.record.pongs_received += 1

        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            while not sock.closing:
                await asyncio.sleep(self.ping_interval)
                if sock.closing or sock.ws.silent:
                    continue
                waiter = await sock.ws.ping()
                sock.record.pings_sent += 1
                waiter.add_done_callback(on_pong)  # type: ignore[attr-defined]

    async def _watchdog_loop(self) -> None:
        """Close sockets whose last pong is older than ``ping_timeout`` (Dhan's 40 s rule)."""
        loop = asyncio.get_running_loop()
        period = max(0.01, min(1.0, self.ping_timeout / 4, self.ping_interval))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for sock in self._live():
                if sock.ws.silent:
                    sock.last_pong = now  # we sent no pings: nothing to answer
                elif now - sock.last_pong > self.ping_timeout and self._mark_closing(
                    sock, "keepalive_timeout"
                ):
                    self._spawn(
                        sock.ws.close(KEEPALIVE_CLOSE_CODE, "keepalive ping timeout"),
                        f"timeout-{sock.record.id}",
                    )

    # ------------------------------------------------------------------------------------- requests

    def _malformed(self, sock: _Socket, reason: str) -> None:
        sock.record.malformed += 1
        sock.record.last_error = reason
        self.stats.malformed += 1
        if self.strict_requests:
            self._kick(sock, 814)

    def _on_message(self, sock: _Socket, message: str | bytes) -> None:
        record = sock.record
        record.messages += 1
        if isinstance(message, bytes):
            self._malformed(sock, "binary frame from client")
            return
        try:
            request = parse_request(message)
        except RequestError as exc:
            self._malformed(sock, str(exc))
            return
        if isinstance(request, DisconnectRequest):
            self._mark_closing(sock, "client_request")
            if record.subscriptions:
                self._journal(sock, "close", "", ())
                record.final_subscriptions = len(record.subscriptions)
                record.subscriptions.clear()
            self._spawn(sock.ws.close(), f"bye-{record.id}")
            return
        keys = request.keys
        n = len(keys)
        record.instruments_received += n
        record.max_message_instruments = max(record.max_message_instruments, n)
        self.stats.max_instruments_per_message = max(self.stats.max_instruments_per_message, n)
        if n > self.limits.instruments_per_message:
            self._breach("instruments_per_message", sock, n, self.limits.instruments_per_message)
            self._kick(sock, 804)
            return
        if request.subscribe:
            record.subscribe_messages += 1
        else:
            record.unsubscribe_messages += 1
        known = self._resolve(sock, keys)
        subs = record.subscriptions
        mode = request.mode
        if request.subscribe:
            new = []
            changed: list[tuple[int, FeedMode | None]] = []
            for key in known:
                old = subs.get(key)
                if old is None:
                    new.append(key)
                if old is not mode:
                    changed.append((self._slot(key), old))
                subs[key] = mode
            sock.subscribed(changed, mode, self.model)
            size = len(subs)
            record.max_subscriptions = max(record.max_subscriptions, size)
            self.stats.max_instruments_per_socket = max(self.stats.max_instruments_per_socket, size)
            self._journal(sock, "subscribe", mode.name, tuple(known))
            if size > self.limits.instruments_per_socket:
                self._breach("instruments_per_socket", sock, size, self.limits.instruments_per_socket)
                self._kick(sock, 804)
                return
            if new and not record.stalled:
                self._send_packets(
                    sock, self.model.packets(ResponseCode.PREV_CLOSE, self.model.slots_of(new))
                )
        else:
            removed = []
            dropped: list[tuple[int, FeedMode]] = []
            for key in known:
                old = subs.pop(key, None)
                if old is not None:
                    removed.append(key)
                    dropped.append((self._slot(key), old))
                    if old is not mode:
                        record.mode_mismatches += 1
                        self.stats.mode_mismatches += 1
            sock.unsubscribed(dropped)
            self._journal(sock, "unsubscribe", mode.name, tuple(removed))

    def _slot(self, key: InstrumentKey) -> int:
        slot = self.model.slot(key)
        if slot is None:  # _resolve registers every key it returns
            raise KeyError(key)
        return slot

    def _resolve(self, sock: _Socket, keys: Sequence[InstrumentKey]) -> list[InstrumentKey]:
        """The keys the master knows (registered with the price model); unknown ones are counted."""
        model = self.model
        missing = [k for k in keys if model.slot(k) is None]
        unknown: set[InstrumentKey] = set()
        if missing:
            specs = []
            for key, spec in zip(missing, self.universe.lookup_many(missing), strict=True):
                if spec is None:
                    unknown.add(key)
                    continue
                if not model.has_underlying(spec.underlying):
                    price = self.universe.reference_price(spec.underlying)
                    if price is None or not price > 0:
                        price = fallback_price(spec.underlying, index=spec.asset is AssetClass.INDEX)
                    model.add_underlying(spec.underlying, price, spec.asset)
                specs.append(spec)
            model.add_many(specs)
        if not unknown:
            return list(keys)
        count = sum(1 for k in keys if k in unknown)
        sock.record.unknown_instruments += count
        self.stats.unknown_instruments += count
        return [k for k in keys if k not in unknown]

    # -------------------------------------------------------------------------------------- streaming

    async def _stream_loop(self) -> None:
        """Every ``tick_interval``: step the market, then emit the packets the rate owes."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        self._rate_mark = (last, 0)
        window_lag = 0.0
        while True:
            await asyncio.sleep(self.tick_interval)
            now = loop.time()
            elapsed, last = now - last, now
            stats = self.stats
            stats.ticks += 1
            lag = elapsed - self.tick_interval
            stats.max_tick_lag_s = max(stats.max_tick_lag_s, lag)
            window_lag = max(window_lag, lag)
            started = time.perf_counter()
            try:
                self._emit(min(elapsed, 0.25))
            except Exception:  # a bug here must not stop the feed; it is logged and counted
                stats.emit_errors += 1
                logger.exception("simulator emit failed")
            stats.busy_s += time.perf_counter() - started
            mark_time, mark_count = self._rate_mark
            if now - mark_time >= 1.0:
                stats.emit_rate_pps = (self._emitted - mark_count) / (now - mark_time)
                stats.recent_tick_lag_s, window_lag = window_lag, 0.0
                self._rate_mark = (now, self._emitted)

    def _emit(self, elapsed: float) -> None:
        self.model.step(elapsed)
        streams = [s for s in self._sockets.values() if s.streaming]
        if not streams or self.rate <= 0:
            self._carry = 0.0
            return
        self._carry += self.rate * elapsed
        total = int(self._carry)
        self._carry -= total
        if total == 0:
            return
        weights = np.array([len(s.record.subscriptions) for s in streams], dtype=np.float64)
        counts = self.rng.multinomial(total, weights / weights.sum()).tolist()
        by_code: dict[int, list[tuple[_Socket, Array]]] = {}
        for sock, count in zip(streams, counts, strict=True):
            if count == 0:
                continue
            record = sock.record
            if record.stalled or not sock.writable:
                record.packets_withheld += count
                self.stats.packets_withheld += count
                continue
            if sock.buffered() > self.max_buffer:
                record.backpressure_skips += 1
                record.packets_withheld += count
                self.stats.backpressure_skips += 1
                self.stats.packets_withheld += count
                continue
            for code, slots in sock.sample(count, self.rng, self.oi_share):
                by_code.setdefault(code, []).append((sock, slots))
        now = self.clock.timestamp()
        for code, parts in by_code.items():
            packets = self.model.packets(code, np.concatenate([slots for _, slots in parts]), now)
            start = 0
            for sock, slots in parts:
                self._send_packets(sock, packets[start : start + len(slots)])
                start += len(slots)

    def _send_packets(self, sock: _Socket, packets: Array) -> None:
        """Frame ``packets`` (``stack`` per frame), corrupt some if asked, write them in one go."""
        n = len(packets)
        if n == 0 or not sock.writable or sock.record.stalled:
            return
        size = packets.dtype.itemsize
        raw = np.ascontiguousarray(packets).view(np.uint8).reshape(n, size)
        full, rest = divmod(n, self.stack)
        chunks: list[bytes] = []
        frames = corrupt = 0
        start = 0
        for rows, per in ((full, self.stack), (1 if rest else 0, rest)):
            if rows == 0:
                continue
            header = ws_header(per * size)
            hlen = len(header)
            matrix = np.empty((rows, hlen + per * size), dtype=np.uint8)
            matrix[:, :hlen] = np.frombuffer(header, dtype=np.uint8)
            matrix[:, hlen:] = raw[start : start + rows * per].reshape(rows, per * size)
            start += rows * per
            frames += rows
            if self.corrupt_pct > 0:
                data, bad = self._corrupt(matrix, hlen, size)
                chunks.append(data)
                corrupt += bad
            else:
                chunks.append(matrix.tobytes())
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        sock.ws.transport.write(data)
        code = int(packets[0]["code"])
        record, stats = sock.record, self.stats
        record.packets_sent[code] += n
        record.frames_sent += frames
        record.bytes_sent += len(data)
        record.corrupt_frames += corrupt
        stats.packets_sent[code] += n
        stats.frames_sent += frames
        stats.bytes_sent += len(data)
        stats.corrupt_frames += corrupt
        if code != ResponseCode.PREV_CLOSE:
            self._emitted += n

    def _corrupt(self, frames: Array, hlen: int, packet_size: int) -> tuple[bytes, int]:
        """Damage ``corrupt_pct`` % of the rows of a frame matrix so the decoder must flag them corrupt."""
        rows, width = frames.shape
        count = int(self.rng.binomial(rows, self.corrupt_pct / 100.0))
        if count == 0:
            return frames.tobytes(), 0
        chosen = self.rng.choice(rows, size=count, replace=False)
        if self.corrupt_mode == "garble":
            truncate = np.zeros(count, dtype=bool)
        elif self.corrupt_mode == "truncate":
            truncate = np.ones(count, dtype=bool)
        else:
            truncate = self.rng.random(count) < 0.5
        payload = width - hlen
        garble = chosen[~truncate]
        if len(garble):
            # First packet's length field: 3 (< header size) or 0xFFFF (past the end of the frame).
            big = (
                self.rng.random(len(garble)) < 0.5 if payload < 0xFFFF else np.zeros(len(garble), dtype=bool)
            )
            length = np.where(big, 0xFFFF, 3)
            frames[garble, hlen + 1] = length & 0xFF
            frames[garble, hlen + 2] = length >> 8
        cut_rows = chosen[truncate]
        if not len(cut_rows):
            return frames.tobytes(), count
        keep = np.ones(rows, dtype=bool)
        keep[cut_rows] = False
        parts = [frames[keep].tobytes()]
        for row in cut_rows.tolist():
            cut = int(self.rng.integers(1, payload))
            if cut % packet_size == 0:  # a cut on a packet boundary would still be a valid frame
                cut -= 1
            parts.append(ws_frame(frames[row, hlen : hlen + cut].tobytes()))
        return b"".join(parts), count

    # ------------------------------------------------------------------------------------ HTTP side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP on the feed port: ``/master.csv``, ``/control/...``; refusal of feed connections.

        websockets only parses GET requests, so every control action is a GET with query parameters."""
        path, _, query = request.path.partition("?")
        if path == "/master.csv":
            return self._master_response(request)
        if path.startswith("/control/"):
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            try:
                body = self.control(path.removeprefix("/control/"), params)
            except KeyError as exc:
                return _json_response(http.HTTPStatus.NOT_FOUND, {"ok": False, "error": str(exc.args[0])})
            except (ValueError, TypeError) as exc:
                return _json_response(http.HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(exc)})
            return _json_response(http.HTTPStatus.OK, body)
        if time.monotonic() < self.refuse_until:
            self.stats.refused += 1
            if self.refuse_mode == "close":
                connection.transport.abort()
            return _json_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"ok": False, "error": "refusing connections (fault injected)"},
            )
        return None

    def _master_response(self, request: Request) -> Response:
        if self.master_bytes is None:
            return _json_response(http.HTTPStatus.NOT_FOUND, {"ok": False, "error": "no master loaded"})
        etag = f'"{self._etag}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(304, "Not Modified", Headers([("ETag", etag), ("Content-Length", "0")]), b"")
        headers = Headers(
            [
                ("Content-Type", "text/csv; charset=utf-8"),
                ("Content-Length", str(len(self.master_bytes))),
                ("ETag", etag),
                ("Last-Modified", email.utils.formatdate(self._master_mtime, usegmt=True)),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, self.master_bytes)

    def control(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One control-API action (the HTTP endpoints call this); ``KeyError`` for an unknown action."""
        selector = params.get("socket")

        def number(name: str, default: float | None = None) -> float:
            raw = params.get(name)
            if raw is None:
                if default is None:
                    raise ValueError(f"missing parameter {name!r}")
                return default
            return float(raw)

        def seconds() -> float | None:
            return float(params["seconds"]) if "seconds" in params else None

        if action == "state":
            return self.state(
                subscriptions=params.get("subs", "1") != "0", history=params.get("history", "1") != "0"
            )
        if action == "clock":
            return {"ok": True, "clock": self.clock.describe()}
        if action == "view":
            return {"ok": True, "view": self.view_json()}
        if action == "journal":
            return {
                "ok": True,
                "seq": self._journal_seq,
                "entries": self.journal_json(int(number("since", 0))),
            }
        if action == "quote":
            key = InstrumentKey.parse(params.get("key", ""))
            return {"ok": True, "key": str(key), "values": self.last_values(key)}
        if action == "drop":
            return {"ok": True, "sockets": self.drop(selector)}
        if action == "disconnect":
            return {"ok": True, "sockets": self.disconnect(selector, int(number("code", 800)))}
        if action == "corrupt":
            mode = params.get("mode", "mixed")
            if mode not in ("mixed", "garble", "truncate"):
                raise ValueError(f"corrupt mode must be mixed, garble or truncate, got {mode!r}")
            self.corrupt(number("pct"), mode)  # type: ignore[arg-type]
            return {"ok": True, "corrupt_pct": self.corrupt_pct, "mode": self.corrupt_mode}
        if action == "stall":
            return {"ok": True, "sockets": self.stall(selector, seconds())}
        if action in ("silence", "silent"):
            return {"ok": True, "sockets": self.silence(selector, seconds())}
        if action == "resume":
            return {"ok": True, "sockets": self.resume(selector)}
        if action == "refuse":
            mode = params.get("mode", "503")
            if mode not in ("503", "close"):
                raise ValueError(f"refuse mode must be 503 or close, got {mode!r}")
            self.refuse(number("seconds"), mode)  # type: ignore[arg-type]
            return {"ok": True, "refusing_for": self.refusing_for}
        if action == "expire_token":
            return {"ok": True, "sockets": self.expire_token(params.get("client_id"))}
        if action == "set_token":
            if "token" not in params:
                raise ValueError("missing parameter 'token'")
            self.set_token(params["token"], params.get("client_id"))
            return {"ok": True}
        if action == "rate":
            stack = params.get("stack")
            self.set_rate(number("pps", self.rate), int(stack) if stack is not None else None)
            return {"ok": True, "rate": self.rate, "stack": self.stack}
        if action == "price":
            symbol = params.get("symbol", "")
            if not self.model.has_underlying(symbol):
                raise ValueError(f"no subscribed instrument has underlying {symbol!r}")
            self.set_price(symbol, number("price"))
            return {"ok": True, "symbol": symbol, "price": self.model.underlying_price(symbol)}
        if action == "inject":
            return {"ok": True, "sockets": self.inject(selector, bytes.fromhex(params.get("hex", "")))}
        raise KeyError(f"unknown control action {action!r}")


def _json_response(status: http.HTTPStatus, body: Any) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)


# ------------------------------------------------------------------------------------------------- CLI


async def run(
    *,
    master: Path | None = None,
    ready: Callable[[Simulator], None] | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Run a simulator until SIGINT/SIGTERM (or ``stop``): the body of ``tickgate simulate``.

    Without ``master`` a full-size master is generated (seed 0, today) into a temporary directory, so the
    universe and ``/master.csv`` match what ``tickgate instruments generate`` would write.
    """
    import tempfile

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="tickgate-sim-") as tmp:
        if master is None:
            from tickgate.instruments import generate_master

            clock: Clock = options.get("clock") or get_settings().make_clock()
            master = Path(tmp) / "master.csv"
            await asyncio.to_thread(generate_master, master, today=clock.today())
        async with Simulator(master=master, **options) as sim:
            if ready is not None:
                ready(sim)
            await stop.wait()


def announce(sim: Simulator) -> None:
    """The lines a parent process reads (the first one is the contract)."""
    sys.stdout.write(f"SIMULATOR {sim.url}\nCONTROL {sim.http_url}/control/state\nMASTER {sim.master_url}\n")
    info = sim.clock.describe()
    if info["virtual"] and "anchor" in info:  # what makes another process read the same virtual time
        sys.stdout.write(
            f"CLOCK TICKGATE_CLOCK_START={info['start']} TICKGATE_CLOCK_SPEED={info['speed']:g}"
            f" TICKGATE_CLOCK_ANCHOR={info['anchor']!r}\n"
        )
    sys.stdout.flush()
