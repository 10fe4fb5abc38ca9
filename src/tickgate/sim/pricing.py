"""The simulator's market: a price model that makes option chains, futures and cash move together.

Every *underlying* (an index, a stock, a commodity, a currency pair) follows a mean-reverting geometric random
walk with a realistic volatility for its asset class. Everything else is *derived* from its underlying at the
moment a packet is built: a future is the forward ``S·e^{rT}``, an option is Black-76 on that forward. So a
chain is arbitrage-free at every instant (calls fall as the strike rises, puts rise), and a test that
subscribes to an index and its options sees them move together.

State lives in numpy columns indexed by a dense *slot* per instrument (assigned on first subscription, so a
290k-row master costs nothing until it is used), and packets are built for many slots at once straight into
the protocol's wire dtypes (:func:`tickgate.dhan.protocol.empty_packets`). Nothing here knows about sockets.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
from scipy.special import ndtr

from tickgate.clock import SYSTEM_CLOCK
from tickgate.dhan.protocol import (
    DEPTH_LEVELS,
    IST_OFFSET_SECONDS,
    InstrumentKey,
    ResponseCode,
    empty_packets,
)
from tickgate.schedule.calendar import contract_close

Array = np.ndarray[Any, np.dtype[Any]]

SECONDS_PER_YEAR = 365.0 * 86_400.0
TRADING_SECONDS_PER_YEAR = 252.0 * 6.25 * 3600.0  # volatility is quoted per year of trading time
CARRY_RATE = 0.065  # cost of carry: futures trade at a premium of ~6.5 % a year
U32_MAX = 2**32 - 1
U16_MAX = 2**16 - 1


class Kind(IntEnum):
    """How an instrument's price follows its underlying."""

    SPOT = 0  # index, cash equity: the underlying itself
    FUTURE = 1
    CALL = 2
    PUT = 3


class AssetClass(StrEnum):
    """Picks the volatility of an underlying (and whether it trades volume at all)."""

    INDEX = "index"
    EQUITY = "equity"
    COMMODITY = "commodity"
    CURRENCY = "currency"


ANNUAL_VOLATILITY: dict[AssetClass, float] = {
    AssetClass.INDEX: 0.14,
    AssetClass.EQUITY: 0.30,
    AssetClass.COMMODITY: 0.25,
    AssetClass.CURRENCY: 0.06,
}

# Spot levels of the main underlyings when nothing better is known (late 2025 levels, as in the generator).
REFERENCE_PRICES: dict[str, float] = {
    "NIFTY": 26_000.0,
    "BANKNIFTY": 59_000.0,
    "FINNIFTY": 27_500.0,
    "MIDCPNIFTY": 13_500.0,
    "NIFTYNXT50": 70_500.0,
    "SENSEX": 85_000.0,
    "BANKEX": 66_000.0,
    "SENSEX50": 27_000.0,
    "SNSX50": 27_000.0,
    "INDIA VIX": 12.0,
    "INDIAVIX": 12.0,
    "USDINR": 88.6,
    "EURINR": 103.5,
    "GBPINR": 118.4,
    "JPYINR": 58.9,
    "CRUDEOIL": 5_650.0,
    "GOLD": 128_000.0,
    "SILVER": 152_000.0,
    "NATURALGAS": 385.0,
}


def fallback_price(symbol: str, *, index: bool = False) -> float:
    """A stable, plausible price for a symbol nobody priced (same symbol → same price, every run):
    ₹55–₹2,980 for a stock, 5,500–298,000 points for an index."""
    digest = 0
    for char in symbol.encode():
        digest = (digest * 131 + char) % 1_000_003
    price = math.exp(4.0 + 4.0 * digest / 1_000_003)
    return round(price * 100 if index else price, 1)


@functools.lru_cache(maxsize=4096)
def expiry_timestamp(expiry: dt.date, *, exchange: str = "NSE") -> float:
    """Epoch seconds at which a contract stops trading (:func:`tickgate.schedule.calendar.contract_close`;
    ``exchange`` "CUR" for currency contracts)."""
    return contract_close(expiry, exchange).timestamp()


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """What the price model needs to know about one feed instrument (built by a ``Universe``)."""

    key: InstrumentKey
    kind: Kind
    underlying: str  # the symbol whose random walk drives this instrument
    asset: AssetClass
    strike: float = 0.0
    expiry_ts: float | None = None  # epoch seconds; None for spot instruments
    tick_size: float = 0.05
    lot_size: int = 1

    @property
    def is_derivative(self) -> bool:
        return self.kind is not Kind.SPOT

    @property
    def option_type(self) -> str | None:
        return {Kind.CALL: "CE", Kind.PUT: "PE"}.get(self.kind)


def normal_cdf(x: Array) -> Array:
    """Standard normal CDF, vectorised (scipy's C ufunc: exact to double precision, so that an implied
    volatility read from the simulator's prices is the volatility it priced them with)."""
    result: Array = ndtr(x)
    return result


def black76(
    kind: Array, forward: Array, strike: Array, years: Array, vol: Array, *, rate: float = CARRY_RATE
) -> Array:
    """Black-76 call/put premium (``kind`` = Kind.CALL/PUT), discounted at ``rate`` over ``years`` as a
    premium paid today is; intrinsic value once expired."""
    live = years > 1e-7
    safe_t = np.where(live, years, 1.0)
    sd = vol * np.sqrt(safe_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    call = forward * normal_cdf(d1) - strike * normal_cdf(d2)
    put = strike * normal_cdf(-d2) - forward * normal_cdf(-d1)
    value = np.where(kind == Kind.CALL, call, put) * np.exp(-rate * safe_t)
    intrinsic = np.where(kind == Kind.CALL, forward - strike, strike - forward)
    result: Array = np.where(live, value, np.maximum(intrinsic, 0.0))
    return result


class _Columns:
    """Growable numpy columns (doubling), one row per slot."""

    def __init__(self, spec: dict[str, str], capacity: int = 64) -> None:
        self._spec = spec
        self.size = 0
        self.capacity = capacity
        self.data: dict[str, Array] = {name: np.zeros(capacity, dtype=dtype) for name, dtype in spec.items()}

    def extend(self, count: int) -> Array:
        """Add ``count`` zeroed rows; returns their indices."""
        needed = self.size + count
        if needed > self.capacity:
            while self.capacity < needed:
                self.capacity *= 2
            for name, column in self.data.items():
                grown = np.zeros(self.capacity, dtype=column.dtype)
                grown[: self.size] = column[: self.size]
                self.data[name] = grown
        rows = np.arange(self.size, needed, dtype=np.int64)
        self.size = needed
        return rows

    def append(self) -> int:
        return int(self.extend(1)[0])

    def __getitem__(self, name: str) -> Array:
        return self.data[name]


_UNDERLYING_COLUMNS = {"spot": "f8", "reference": "f8", "prev_spot": "f8", "vol": "f8", "trades": "?"}
_SLOT_COLUMNS = {
    "segment": "u1",
    "security_id": "u4",
    "kind": "i1",
    "under": "i4",
    "strike": "f8",
    "expiry": "f8",
    "tick": "f8",
    "lot": "i8",
    "derivative": "?",
    "prev_close": "f8",
    "prev_oi": "f8",
    "open": "f8",
    "high": "f8",
    "low": "f8",
    "volume": "f8",
    "atp": "f8",
    "oi": "f8",
    "oi_high": "f8",
    "oi_low": "f8",
    "last_ltp": "f8",
    "last_ltq": "f8",
    "last_ltt": "i8",
    "sent": "i8",
}


class PriceModel:
    """Prices for every slot, stepped on a timer and read in bulk when packets are built.

    ``clock`` (epoch seconds) drives time to expiry and LTT; tests may pass a fixed clock. ``vol_scale``
    multiplies every volatility of the random walk (not of option pricing), to make moves visible quickly.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        vol_scale: float = 1.0,
        mean_reversion: float = 1.0 / 3600.0,
        clock: Callable[[], float] = SYSTEM_CLOCK.timestamp,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.vol_scale = vol_scale
        self.mean_reversion = mean_reversion  # per second, pulls log spot back to its reference
        self.clock = clock
        self.stamp_volume = False
        # Quote/Full ``close`` during the day: 0 (Dhan's docs: the day's close, filled after the close), or
        # the previous close (what one production client reports for NSE_EQ/NSE_FNO).
        self.close_is_prev_close = False
        self._under = _Columns(_UNDERLYING_COLUMNS, 16)
        self._under_index: dict[str, int] = {}
        self._slots = _Columns(_SLOT_COLUMNS, 256)
        self._slot_index: dict[InstrumentKey, int] = {}
        self._specs: list[InstrumentSpec] = []

    # ---------------------------------------------------------------------------------------- registration

    def __len__(self) -> int:
        return self._slots.size

    def has_underlying(self, symbol: str) -> bool:
        return symbol in self._under_index

    def add_underlying(self, symbol: str, price: float, asset: AssetClass) -> int:
        """Register an underlying at ``price`` (idempotent: an existing one keeps its current price)."""
        index = self._under_index.get(symbol)
        if index is not None:
            return index
        if not (price > 0 and math.isfinite(price)):
            raise ValueError(f"reference price of {symbol} must be positive, got {price}")
        index = self._under.append()
        u = self._under
        u["spot"][index] = price
        u["reference"][index] = price
        u["prev_spot"][index] = price * math.exp(self.rng.normal(0.0, 0.008))
        u["vol"][index] = ANNUAL_VOLATILITY[asset]
        u["trades"][index] = asset is not AssetClass.INDEX
        self._under_index[symbol] = index
        return index

    def slot(self, key: InstrumentKey) -> int | None:
        return self._slot_index.get(key)

    def spec(self, slot: int) -> InstrumentSpec:
        return self._specs[slot]

    def add(self, spec: InstrumentSpec) -> int:
        """The slot of ``spec.key``, created on first use (its underlying must be registered first)."""
        return int(self.add_many([spec])[0])

    def add_many(self, specs: Sequence[InstrumentSpec]) -> Array:
        """Slots of ``specs`` (created on first use, in bulk: a 100-instrument subscribe costs one pricing
        pass, not a hundred). Their underlyings must be registered first."""
        fresh = list({s.key: s for s in specs if s.key not in self._slot_index}.values())
        if fresh:
            self._create(fresh)
        return np.fromiter((self._slot_index[s.key] for s in specs), dtype=np.int64, count=len(specs))

    def _create(self, specs: list[InstrumentSpec]) -> None:
        missing = {s.underlying for s in specs} - self._under_index.keys()
        if missing:
            raise KeyError(f"underlyings not registered: {sorted(missing)}")
        n = len(specs)
        rows = self._slots.extend(n)
        for spec, row in zip(specs, rows.tolist(), strict=True):
            self._specs.append(spec)
            self._slot_index[spec.key] = row
        s = self._slots.data
        s["segment"][rows] = [int(spec.key.segment) for spec in specs]
        s["security_id"][rows] = [spec.key.security_id for spec in specs]
        s["kind"][rows] = [int(spec.kind) for spec in specs]
        under = np.array([self._under_index[spec.underlying] for spec in specs], dtype=np.int64)
        s["under"][rows] = under
        s["strike"][rows] = [spec.strike if spec.strike > 0 else 1.0 for spec in specs]
        s["expiry"][rows] = [np.inf if spec.expiry_ts is None else spec.expiry_ts for spec in specs]
        tick = np.array([spec.tick_size if spec.tick_size > 0 else 0.05 for spec in specs])
        s["tick"][rows] = tick
        lot = np.array([max(spec.lot_size, 1) for spec in specs], dtype=np.int64)
        s["lot"][rows] = lot
        derivative = np.array([spec.is_derivative for spec in specs], dtype=bool)
        s["derivative"][rows] = derivative
        now = self.clock()
        prev_fair = self._fair(rows, self._under["prev_spot"][under], now - 86_400.0)
        current = self.prices(rows, now)
        s["prev_close"][rows] = np.maximum(np.round(prev_fair / tick) * tick, tick)
        for column in ("open", "high", "low", "atp", "last_ltp"):
            s[column][rows] = current
        trades = derivative | self._under["trades"][under]
        s["volume"][rows] = self.rng.integers(0, 2000, size=n) * lot * trades
        oi = self.rng.integers(20, 20_000, size=n) * lot * derivative
        for column in ("oi", "oi_high", "oi_low"):
            s[column][rows] = oi
        s["prev_oi"][rows] = np.round(oi * self.rng.uniform(0.8, 1.2, size=n) / lot) * lot

    # ------------------------------------------------------------------------------------------ dynamics

    def step(self, seconds: float) -> None:
        """Advance every underlying's random walk by ``seconds`` of trading time."""
        n = self._under.size
        if n == 0 or seconds <= 0:
            return
        spot = self._under["spot"][:n]
        reference = self._under["reference"][:n]
        sigma = self._under["vol"][:n] * self.vol_scale * math.sqrt(seconds / TRADING_SECONDS_PER_YEAR)
        pull = self.mean_reversion * seconds * np.log(reference / spot)
        spot *= np.exp(pull + sigma * self.rng.standard_normal(n))

    def set_underlying_price(self, symbol: str, price: float) -> None:
        """Move an underlying to ``price`` now (tests: a deterministic market move)."""
        index = self._under_index[symbol]
        self._under["spot"][index] = price

    def underlying_price(self, symbol: str) -> float:
        return float(self._under["spot"][self._under_index[symbol]])

    def _fair(self, slots: Array, spot: Array, now: float) -> Array:
        """Unrounded value of ``slots`` given their underlyings' ``spot`` at time ``now``."""
        s = self._slots.data
        kind = s["kind"][slots]
        years = np.maximum(s["expiry"][slots] - now, 0.0) / SECONDS_PER_YEAR
        years = np.where(np.isfinite(years), years, 0.0)
        forward = spot * np.exp(CARRY_RATE * years)
        value = np.where(kind == Kind.FUTURE, forward, spot)
        options = kind >= Kind.CALL
        if options.any():
            vol = self._under["vol"][s["under"][slots[options]]]
            value[options] = black76(
                kind[options], forward[options], s["strike"][slots[options]], years[options], vol
            )
        return value

    def prices(self, slots: Array, now: float | None = None) -> Array:
        """Current LTP of ``slots``: fair value rounded to the tick, never below one tick."""
        now = self.clock() if now is None else now
        spot = self._under["spot"][self._slots["under"][slots]]
        tick = self._slots["tick"][slots]
        result: Array = np.maximum(np.round(self._fair(slots, spot, now) / tick) * tick, tick)
        return result

    # ------------------------------------------------------------------------------------------- packets

    def _trade(self, slots: Array, now: float) -> tuple[Array, Array, int]:
        """One simulated trade per packet: price, quantity; updates day stats and the 'last sent' columns."""
        s = self._slots.data
        ltp = self.prices(slots, now)
        lot = s["lot"][slots]
        trades = s["derivative"][slots] | self._under["trades"][s["under"][slots]]
        ltq = np.where(trades, lot * self.rng.integers(1, 11, size=len(slots)), 0)
        ltq = np.minimum(ltq, U16_MAX)
        volume = s["volume"][slots]
        total = volume + ltq
        with np.errstate(divide="ignore", invalid="ignore"):
            atp = np.where(total > 0, (s["atp"][slots] * volume + ltp * ltq) / total, ltp)
        s["volume"][slots] = total
        s["atp"][slots] = atp
        s["high"][slots] = np.maximum(s["high"][slots], ltp)
        s["low"][slots] = np.minimum(s["low"][slots], ltp)
        s["last_ltp"][slots] = ltp
        s["last_ltq"][slots] = ltq
        ltt = int(now) + IST_OFFSET_SECONDS  # Dhan encodes IST wall-clock time as if it were UTC
        s["last_ltt"][slots] = ltt
        s["sent"][slots] += 1
        return ltp, ltq, ltt

    def _move_oi(self, slots: Array) -> Array:
        s = self._slots.data
        derivative = s["derivative"][slots]
        change = s["lot"][slots] * self.rng.integers(-3, 4, size=len(slots)) * derivative
        oi = np.clip(s["oi"][slots] + change, 0, U32_MAX)
        s["oi"][slots] = oi
        s["oi_high"][slots] = np.maximum(s["oi_high"][slots], oi)
        s["oi_low"][slots] = np.minimum(s["oi_low"][slots], oi)
        return oi

    def _header(self, packets: Array, slots: Array) -> None:
        packets["segment"] = self._slots["segment"][slots]
        packets["security_id"] = self._slots["security_id"][slots]

    def packets(self, code: int, slots: Array, now: float | None = None) -> Array:
        """Wire-dtype packets of response ``code`` (Ticker/Quote/OI/PrevClose/Full) for ``slots``, in order.

        Market packets are trades: they advance volume, ATP, high/low and OI of those slots. A slot drawn
        several times in one call trades once and its packets repeat, so what was sent always agrees with
        :meth:`snapshot`.
        """
        now = self.clock() if now is None else now
        if len(slots) > 1:
            unique, inverse = np.unique(slots, return_inverse=True)
            if len(unique) < len(slots):
                built: Array = self._build(code, unique, now)[inverse]
                return built
        return self._build(code, slots, now)

    def _build(self, code: int, slots: Array, now: float) -> Array:
        """:meth:`packets` for distinct ``slots``."""
        n = len(slots)
        packets = empty_packets(code, n)
        if n == 0:
            return packets
        self._header(packets, slots)
        s = self._slots.data
        if code == ResponseCode.PREV_CLOSE:
            packets["prev_close"] = s["prev_close"][slots]
            packets["prev_oi"] = s["prev_oi"][slots]
            return packets
        if code == ResponseCode.OI:
            packets["oi"] = self._move_oi(slots)
            return packets
        ltp, ltq, ltt = self._trade(slots, now)
        packets["ltp"] = ltp
        packets["ltt"] = ltt
        if code == ResponseCode.TICKER:
            return packets
        packets["ltq"] = ltq
        packets["atp"] = s["atp"][slots]
        packets["volume"] = np.minimum(s["volume"][slots], U32_MAX)
        if self.stamp_volume:  # benchmark aid: the send time (µs, mod 2^32) rides in the volume field
            packets["volume"] = int(time.time() * 1e6) & U32_MAX  # real-time: latency is measured on the host
        lot = s["lot"][slots]
        trades = ltq > 0  # index quotes carry no traded or pending quantity
        packets["total_sell_qty"] = lot * self.rng.integers(100, 5_000, size=n) * trades
        packets["total_buy_qty"] = lot * self.rng.integers(100, 5_000, size=n) * trades
        packets["open"] = s["open"][slots]
        packets["close"] = s["prev_close"][slots] if self.close_is_prev_close else 0.0
        packets["high"] = s["high"][slots]
        packets["low"] = s["low"][slots]
        if code == ResponseCode.QUOTE:
            return packets
        packets["oi"] = self._move_oi(slots)
        packets["oi_day_high"] = s["oi_high"][slots]
        packets["oi_day_low"] = s["oi_low"][slots]
        self._fill_depth(packets["depth"], ltp, s["tick"][slots], lot)
        return packets

    def _fill_depth(self, depth: Array, ltp: Array, tick: Array, lot: Array) -> None:
        """Five bid and ask levels a spread apart around the LTP, stepping one tick (or 0.01 %) per level."""
        n = len(ltp)
        step = np.maximum(tick, np.ceil(ltp * 0.0001 / tick) * tick)[:, None]
        level = np.arange(DEPTH_LEVELS, dtype=np.float64)[None, :]
        depth["bid_price"] = np.maximum(ltp[:, None] - (level + 1) * step, 0.0)
        depth["ask_price"] = ltp[:, None] + (level + 1) * step
        depth["bid_qty"] = lot[:, None] * self.rng.integers(1, 60, size=(n, DEPTH_LEVELS))
        depth["ask_qty"] = lot[:, None] * self.rng.integers(1, 60, size=(n, DEPTH_LEVELS))
        depth["bid_orders"] = self.rng.integers(1, 40, size=(n, DEPTH_LEVELS))
        depth["ask_orders"] = self.rng.integers(1, 40, size=(n, DEPTH_LEVELS))

    # ------------------------------------------------------------------------------------------ snapshot

    def snapshot(self, key: InstrumentKey) -> dict[str, float | int] | None:
        """Latest values sent for ``key`` (what a correct quote store should hold once the feed is quiet)."""
        index = self._slot_index.get(key)
        if index is None:
            return None
        s = self._slots.data
        return {
            "ltp": float(np.float32(s["last_ltp"][index])),
            "ltq": int(s["last_ltq"][index]),
            "ltt": int(s["last_ltt"][index]),
            "volume": int(min(s["volume"][index], U32_MAX)),
            "atp": float(np.float32(s["atp"][index])),
            "open": float(np.float32(s["open"][index])),
            "high": float(np.float32(s["high"][index])),
            "low": float(np.float32(s["low"][index])),
            "prev_close": float(np.float32(s["prev_close"][index])),
            "prev_oi": int(s["prev_oi"][index]),
            "oi": int(s["oi"][index]),
            "packets": int(s["sent"][index]),
        }

    def quote_values(self, slots: Array) -> list[dict[str, Any]]:
        """The market of ``slots`` now, for a REST snapshot: the last trade (an instrument that has not
        traded since it was registered shows the price it was registered at), the day's OHLC and volume,
        OI, and five levels of depth around the last price."""
        s = self._slots.data
        n = len(slots)
        depth = empty_packets(ResponseCode.FULL, n)["depth"]
        ltp = s["last_ltp"][slots]
        self._fill_depth(depth, ltp, s["tick"][slots], s["lot"][slots])
        f32 = np.float32
        out = []
        for i, slot in enumerate(slots.tolist()):
            ltt = int(s["last_ltt"][slot])
            out.append(
                {
                    "ltp": float(f32(ltp[i])),
                    "ltq": int(s["last_ltq"][slot]),
                    "ltt_text": _dhan_time(ltt),
                    "open": float(f32(s["open"][slot])),
                    "high": float(f32(s["high"][slot])),
                    "low": float(f32(s["low"][slot])),
                    "prev_close": float(f32(s["prev_close"][slot])),
                    "prev_oi": int(s["prev_oi"][slot]),
                    "volume": int(min(s["volume"][slot], U32_MAX)),
                    "atp": float(f32(s["atp"][slot])),
                    "oi": int(s["oi"][slot]),
                    "oi_high": int(s["oi_high"][slot]),
                    "oi_low": int(s["oi_low"][slot]),
                    "total_buy_qty": int(depth["bid_qty"][i].sum()),
                    "total_sell_qty": int(depth["ask_qty"][i].sum()),
                    "depth": [
                        (
                            int(depth["bid_qty"][i][k]),
                            int(depth["ask_qty"][i][k]),
                            int(depth["bid_orders"][i][k]),
                            int(depth["ask_orders"][i][k]),
                            round(float(depth["bid_price"][i][k]), 4),
                            round(float(depth["ask_price"][i][k]), 4),
                        )
                        for k in range(DEPTH_LEVELS)
                    ],
                }
            )
        return out

    def slots_of(self, keys: list[InstrumentKey]) -> Array:
        return np.fromiter((self._slot_index[k] for k in keys), dtype=np.int64, count=len(keys))

    def in_segments(self, slots: Array, open_segments: Array) -> Array:
        """Which of ``slots`` belong to an open segment (``open_segments``: a bool per segment code)."""
        result: Array = open_segments[self._slots["segment"][slots]]
        return result

    def liquid(self, slots: Array, width: float, rng: np.random.Generator) -> Array:
        """Which draws of ``slots`` trade: an option trades with probability ``exp(-|ln(K/S)| / width)``
        (at least 1%), so far strikes are thin; everything else always trades."""
        s = self._slots
        option = s["kind"][slots] >= Kind.CALL
        spot = self._under["spot"][s["under"][slots]]
        strike = np.where(option, s["strike"][slots], spot)
        chance = np.maximum(np.exp(-np.abs(np.log(strike / spot)) / width), 0.01)
        result: Array = rng.random(len(slots)) < chance
        return result

    def is_derivative(self, slots: Array) -> Array:
        result: Array = self._slots["derivative"][slots]
        return result


def _dhan_time(ltt: int) -> str:
    """A last-trade time as Dhan's REST quote spells it (``dd/mm/YYYY HH:MM:SS``, IST wall clock; LTT is
    IST encoded as if UTC). Never traded: Dhan's ``01/01/1980 00:00:00``."""
    if ltt <= 0:
        return "01/01/1980 00:00:00"
    return dt.datetime.fromtimestamp(ltt, dt.UTC).strftime("%d/%m/%Y %H:%M:%S")
