"""Which instruments the simulated server knows and how to price them: all it needs from a scrip master.

:class:`StaticUniverse` is built by hand (tests describe exactly the instruments they subscribe to);
:class:`RegistryUniverse` reads a loaded scrip master, so the simulator knows what Dhan's master lists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.sim.pricing import (
    REFERENCE_PRICES,
    Array,
    AssetClass,
    InstrumentSpec,
    Kind,
    expiry_timestamp,
)

if TYPE_CHECKING:
    from tickgate.instruments import Instrument, InstrumentRegistry


class Universe(Protocol):
    """Which instruments exist and how to price them: all the simulator needs from a scrip master."""

    def lookup_many(self, keys: Sequence[InstrumentKey]) -> list[InstrumentSpec | None]:
        """Spec per key, ``None`` where the master does not list it (Dhan ignores such ids)."""
        ...

    def reference_price(self, underlying: str) -> float | None:
        """A starting spot for an underlying, or ``None`` to let the simulator pick a stable default."""
        ...


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
        return self._derivative(key, Kind.FUTURE, underlying, asset, expiry, 0.0, tick, lot)

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
        return self._derivative(key, kind, underlying, asset, expiry, strike, tick, lot)

    def _derivative(  # noqa: PLR0917 - private, called twice with every field
        self,
        key: InstrumentKey,
        kind: Kind,
        underlying: str,
        asset: AssetClass,
        expiry: dt.date,
        strike: float,
        tick: float,
        lot: int,
    ) -> InstrumentKey:
        spec = InstrumentSpec(
            key,
            kind,
            underlying,
            asset,
            strike=strike,
            expiry_ts=expiry_timestamp(expiry),
            tick_size=tick,
            lot_size=lot,
        )
        return self.add(spec)

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
    def sample(cls, today: dt.date) -> StaticUniverse:
        """A small built-in market: NIFTY/BANKNIFTY/SENSEX, five NSE stocks, a NIFTY future and a weekly
        chain (24,000–28,000 every 50, ids 50000…), a CRUDEOIL future. Real index/equity ids."""
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
