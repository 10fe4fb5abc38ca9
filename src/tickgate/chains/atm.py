"""The ATM engine: which strikes of an option chain to subscribe, given the underlying's price.

ATM is the *listed* strike nearest to the LTP, never ``round(ltp / step) * step``: real grids are not
uniform (coarser far from the money, odd gaps such as 41000 → 41300 in the BANKNIFTY sample) and the
rounded value is often not listed at all. The window is N strikes centred on that listed strike, taken
from the listing itself; near the edges of the listing it is truncated, and the result says so rather
than silently shifting (a shifted window would no longer be centred on the money).

Pure given a registry: no clock (``now`` and ``today`` are passed in), no I/O. Errors are typed so the
API can map them to 4xx answers.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal, Protocol

from tickgate.chains.cache import TtlCache
from tickgate.config import ChainSettings, get_settings
from tickgate.dhan.protocol import InstrumentKey
from tickgate.instruments.model import Expiry, Instrument, StrikeRow
from tickgate.instruments.registry import InstrumentRegistry

LtpSource = Literal["live", "prev_close", "given", "reference"]
ChainKind = Literal["index", "stock", "commodity", "currency"]

_KIND_OF_INSTRUMENT: dict[str, ChainKind] = {
    "OPTIDX": "index",
    "OPTSTK": "stock",
    "OPTFUT": "commodity",
    "OPTCUR": "currency",
}
_TIE_EPS = 1e-9  # relative: strikes and LTPs are decimal prices, so float noise is far below this


# ------------------------------------------------------------------------------------------------ errors


class ChainError(LookupError):
    """Base of the engine's refusals (the answer to each: ``tickgate.service.errors.as_service_error``)."""


class UnknownSymbolError(ChainError):
    """The registry knows no index, stock, commodity or derivative of that symbol."""


class NoOptionsError(ChainError):
    """The symbol exists but no options are listed on it (cash-only stock, futures-only commodity)."""


class ExpiryNotListedError(ChainError):
    """The symbol has options, but none expiring on that date. ``listed`` holds the upcoming expiries."""

    def __init__(self, message: str, listed: Sequence[dt.date] = ()) -> None:
        super().__init__(message)
        self.listed = tuple(listed)


class ExpiryExpiredError(ChainError):
    """The expiry is in the master but already past: its contracts no longer trade."""


class NoUnderlyingError(ChainError):
    """Options are listed but nothing they are written on is (its LTP is what drives the ATM)."""


# ------------------------------------------------------------------------------------------------ prices


class QuoteLike(Protocol):
    """What the engine reads from a quote (``tickgate.feed.quotes.QuoteSnapshot`` fits)."""

    @property
    def ltp(self) -> float | None: ...

    @property
    def prev_close(self) -> float | None: ...


QuoteLookup = Callable[[InstrumentKey], QuoteLike | None]
"""E.g. ``QuoteStore.get``: the latest quote of an instrument, ``None`` before its first packet."""

LtpLookup = Callable[[InstrumentKey], float | None]
"""The live LTP of an instrument, ``None`` when unknown (what the tracker and Tier B resolution take)."""


def as_price(value: float | None) -> float | None:
    """``value`` as a usable price: ``None`` for missing, zero, negative or NaN (the feed sends 0 before
    the first trade)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) and v > 0 else None


@dataclass(frozen=True, slots=True)
class ResolvedLtp:
    """The price a window was centred on and where it came from."""

    value: float
    source: LtpSource


def resolve_ltp(
    key: InstrumentKey,
    reference: float,
    *,
    quotes: QuoteLookup | None = None,
    ltp: float | None = None,
) -> ResolvedLtp:
    """Best available price of ``key``: the live LTP, else the previous close (both from ``quotes``),
    else the caller's ``ltp``, else ``reference`` (e.g. the middle of the listing) — live data beats a
    number a client typed, and a chain can always be built. Zero, negative and NaN prices count as
    absent (the feed reports 0 before the first trade)."""
    quote = quotes(key) if quotes is not None else None
    if quote is not None:
        if (v := as_price(quote.ltp)) is not None:
            return ResolvedLtp(v, "live")
        if (v := as_price(quote.prev_close)) is not None:
            return ResolvedLtp(v, "prev_close")
    if ltp is not None:
        if (v := as_price(ltp)) is None:
            raise ValueError(f"ltp must be a positive finite price, got {ltp!r}")
        return ResolvedLtp(v, "given")
    return ResolvedLtp(float(reference), "reference")


def quotes_from_ltp(ltp_of: LtpLookup) -> QuoteLookup:
    """Adapt a plain LTP lookup to a quote lookup (no previous close)."""

    def lookup(key: InstrumentKey) -> QuoteLike | None:
        v = ltp_of(key)
        return None if v is None else _Quote(v, None)

    return lookup


def ltp_from_quotes(quotes: QuoteLookup) -> LtpLookup:
    """Adapt a quote lookup (``QuoteStore.get``) to the live-LTP lookup the tracker takes."""

    def lookup(key: InstrumentKey) -> float | None:
        q = quotes(key)
        return None if q is None else as_price(q.ltp)

    return lookup


@dataclass(frozen=True, slots=True)
class _Quote:
    ltp: float | None
    prev_close: float | None


# ------------------------------------------------------------------------------------------- strike maths


def nearest_index(strikes: Sequence[float], ltp: float) -> int:
    """Index of the listed strike nearest to ``ltp`` (ascending ``strikes``); an exact tie goes to the
    lower strike, so the answer never depends on the direction the price came from."""
    if not strikes:
        raise ValueError("no strikes")
    i = bisect_left(strikes, ltp)
    if i == 0:
        return 0
    if i == len(strikes):
        return len(strikes) - 1
    below, above = ltp - strikes[i - 1], strikes[i] - ltp
    return i - 1 if below <= above + _TIE_EPS * max(1.0, abs(ltp)) else i


def window_bounds(atm_index: int, count: int, listed: int) -> tuple[int, int, int, int]:
    """``(start, stop, missing_below, missing_above)`` of ``count`` strikes centred on ``atm_index`` in a
    listing of ``listed``: ``(count - 1) // 2`` below, the rest above (an even count leans up), clipped to
    the listing, never shifted."""
    if count < 1:
        raise ValueError(f"a window needs at least 1 strike, got {count}")
    below = (count - 1) // 2
    above = count - 1 - below
    lo, hi = atm_index - below, atm_index + above + 1
    return max(lo, 0), min(hi, listed), max(0, -lo), max(0, hi - listed)


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ChainListing:
    """Everything listed for one (symbol, expiry): the strike rows, what they are written on, the step.
    Shared by every window of the chain (windows slice it, never copy it)."""

    symbol: str
    exchange: str
    expiry: Expiry
    kind: ChainKind
    underlying: Instrument
    rows: tuple[StrikeRow, ...]
    strikes: tuple[float, ...]
    step: float
    """The registry's most common gap between adjacent strikes (0 when fewer than two are listed)."""

    @property
    def reference_ltp(self) -> float:
        """The middle listed strike: grids are laid out around the money of the day they were listed,
        so it is the best guess when no price is known at all."""
        return self.strikes[(len(self.strikes) - 1) // 2]

    def local_gap(self, index: int, direction: int) -> float:
        """Gap from strike ``index`` to its neighbour in ``direction`` (±1); the gap on the other side at
        the edge of the listing (0 for a single strike)."""
        j = index + direction
        if 0 <= j < len(self.strikes):
            return abs(self.strikes[j] - self.strikes[index])
        j = index - direction
        return abs(self.strikes[j] - self.strikes[index]) if 0 <= j < len(self.strikes) else 0.0


@dataclass(frozen=True)
class ChainWindow:
    """N listed strikes centred on the ATM, with the keys to subscribe."""

    listing: ChainListing = field(repr=False, compare=False)
    ltp: float
    ltp_source: LtpSource
    atm_index: int
    """Index of the ATM strike in the full listing (not in ``rows``)."""
    start: int
    """Index in the listing of ``rows[0]``."""
    requested: int
    truncated_below: int
    truncated_above: int
    rows: tuple[StrikeRow, ...]

    @property
    def symbol(self) -> str:
        return self.listing.symbol

    @property
    def exchange(self) -> str:
        return self.listing.exchange

    @property
    def expiry(self) -> Expiry:
        return self.listing.expiry

    @property
    def underlying(self) -> Instrument:
        return self.listing.underlying

    @property
    def step(self) -> float:
        return self.listing.step

    @property
    def atm_strike(self) -> float:
        return self.listing.strikes[self.atm_index]

    @property
    def returned(self) -> int:
        return len(self.rows)

    @property
    def listed(self) -> int:
        return len(self.listing.strikes)

    @property
    def truncated(self) -> bool:
        return bool(self.truncated_below or self.truncated_above)

    @property
    def strikes(self) -> tuple[float, ...]:
        return self.listing.strikes[self.start : self.start + len(self.rows)]

    @property
    def note(self) -> str | None:
        """Why the window is smaller than asked, in words for a user; ``None`` when it is not."""
        if not self.truncated:
            return None
        s = self.listing.strikes
        parts = []
        if self.truncated_below:
            parts.append(f"{self.truncated_below} fewer below the ATM (lowest listed strike {s[0]:g})")
        if self.truncated_above:
            parts.append(f"{self.truncated_above} fewer above the ATM (highest listed strike {s[-1]:g})")
        return (
            f"{self.symbol} {self.expiry.date}: window truncated at the edge of the listing, "
            f"{self.returned} of {self.requested} strikes around ATM {self.atm_strike:g}: " + "; ".join(parts)
        )

    @cached_property
    def _keys(self) -> tuple[InstrumentKey, ...]:
        out = [self.underlying.key]
        for row in self.rows:
            if row.ce is not None:
                out.append(row.ce)
            if row.pe is not None:
                out.append(row.pe)
        return tuple(dict.fromkeys(out))

    def keys(self) -> tuple[InstrumentKey, ...]:
        """Underlying first (its LTP drives the ATM, so it is subscribed with the chain), then CE and PE
        of every strike in the window, ascending."""
        return self._keys

    def option_keys(self) -> tuple[InstrumentKey, ...]:
        return self._keys[1:]

    def describe(self) -> str:
        return (
            f"{self.symbol} {self.expiry.date} ({self.expiry.kind}): {self.returned} strikes "
            f"{self.strikes[0]:g}–{self.strikes[-1]:g} around ATM {self.atm_strike:g} "
            f"(LTP {self.ltp:g}, {self.ltp_source})"
        )


# ---------------------------------------------------------------------------------------------- engine


def _as_date(expiry: dt.date | Expiry | str) -> dt.date:
    if isinstance(expiry, Expiry):
        return expiry.date
    if isinstance(expiry, dt.datetime):
        return expiry.date()
    if isinstance(expiry, dt.date):
        return expiry
    try:
        return dt.date.fromisoformat(expiry.strip())
    except ValueError:
        raise ValueError(f"expiry must be a date (YYYY-MM-DD), got {expiry!r}") from None


class AtmEngine:
    """Builds chain windows from a registry. Listings and windows are cached for ``cache_ttl_s`` when
    the caller passes ``now``; without it nothing is cached (and nothing reads a clock)."""

    def __init__(
        self,
        registry: InstrumentRegistry,
        settings: ChainSettings | None = None,
        *,
        quotes: QuoteLookup | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings if settings is not None else get_settings().chains
        self.quotes = quotes
        ttl, size = self.settings.cache_ttl_s, self.settings.cache_max_entries
        self._listings: TtlCache[tuple[str, str | None, dt.date, dt.date | None], ChainListing] = TtlCache(
            ttl, size
        )
        self._windows: TtlCache[tuple[str, str, dt.date, int, int], ChainWindow] = TtlCache(ttl, size)

    def default_strikes(self, kind: ChainKind) -> int:
        s = self.settings
        return {
            "index": s.index_strikes,
            "stock": s.stock_strikes,
            "commodity": s.commodity_strikes,
            "currency": s.currency_strikes,
        }[kind]

    # -- listing ---------------------------------------------------------------------------------------

    def listing(
        self,
        symbol: str,
        expiry: dt.date | Expiry | str,
        *,
        exchange: str | None = None,
        today: dt.date | None = None,
        now: float | None = None,
    ) -> ChainListing:
        """The validated listing of (symbol, expiry). ``today`` defaults to the registry's day (its
        ``today`` or the IST date). Raises :class:`UnknownSymbolError`, :class:`NoOptionsError`,
        :class:`ExpiryNotListedError`, :class:`ExpiryExpiredError`, :class:`NoUnderlyingError`."""
        sym = symbol.strip().upper()
        exch = exchange.strip().upper() if exchange else None
        day = _as_date(expiry)
        ck = (sym, exch, day, today)
        if now is not None and (hit := self._listings.get(ck, now)) is not None:
            return hit
        found = self._build_listing(sym, exch, day, today)
        if now is not None:
            self._listings.put(ck, found, now)
        return found

    def _build_listing(self, sym: str, exch: str | None, day: dt.date, today: dt.date | None) -> ChainListing:
        reg = self.registry
        ever = reg.option_expiries(sym, dt.date.min, exchange=exch)
        where = f" on {exch}" if exch else ""
        if not ever:
            elsewhere = reg.option_expiries(sym, dt.date.min) if exch else []
            if elsewhere:
                raise NoOptionsError(f"no {sym} options are listed{where} (they trade on another exchange)")
            if reg.underlying(sym) is None and not reg.futures(sym, dt.date.min):
                raise UnknownSymbolError(f"unknown symbol {sym!r}: not in the instrument master")
            raise NoOptionsError(f"no options are listed on {sym}{where}")
        upcoming = reg.option_expiries(sym, today, exchange=exch)
        match = next((e for e in upcoming if e.date == day), None)
        if match is None:
            nxt = ", ".join(str(e.date) for e in upcoming[:6]) or "none"
            if any(e.date == day for e in ever):
                raise ExpiryExpiredError(
                    f"{sym} options expiring {day} have expired; upcoming expiries: {nxt}"
                )
            raise ExpiryNotListedError(
                f"no {sym} options expire on {day}; upcoming expiries: {nxt}", [e.date for e in upcoming]
            )
        rows = tuple(reg.strikes(sym, day, exchange=exch))
        sample = next((k for r in rows for k in (r.ce, r.pe) if k is not None), None)
        option = reg.get(sample) if sample is not None else None
        if option is None:
            raise NoOptionsError(f"no {sym} option contracts found for {day}")
        underlying = reg.underlying_of(option) or reg.underlying(sym, option.exchange)
        if underlying is None:
            raise NoUnderlyingError(f"{sym}{where}: options are listed but not the instrument they are on")
        try:
            step = reg.strike_step(sym, day, exchange=option.exchange)
        except LookupError:
            step = 0.0
        return ChainListing(
            symbol=sym,
            exchange=option.exchange,
            expiry=match,
            kind=_KIND_OF_INSTRUMENT.get(option.instrument, "stock"),
            underlying=underlying,
            rows=rows,
            strikes=tuple(r.strike for r in rows),
            step=step,
        )

    # -- windows ---------------------------------------------------------------------------------------

    def window(
        self,
        symbol: str,
        expiry: dt.date | Expiry | str,
        strikes: int | None = None,
        *,
        ltp: float | None = None,
        quotes: QuoteLookup | None = None,
        exchange: str | None = None,
        today: dt.date | None = None,
        now: float | None = None,
    ) -> ChainWindow:
        """``strikes`` listed strikes (default by chain kind from settings) centred on the listed strike
        nearest to the underlying's price: live LTP, else previous close (from ``quotes``, default the
        engine's), else ``ltp``, else the middle of the listing — :attr:`ChainWindow.ltp_source` says
        which. Same errors as :meth:`listing`; ``ValueError`` for a bad ``strikes`` or ``ltp``."""
        found = self.listing(symbol, expiry, exchange=exchange, today=today, now=now)
        price = resolve_ltp(
            found.underlying.key,
            found.reference_ltp,
            quotes=quotes if quotes is not None else self.quotes,
            ltp=ltp,
        )
        return self.around(found, price, strikes, now=now)

    def around(
        self,
        listing: ChainListing,
        price: ResolvedLtp,
        strikes: int | None = None,
        *,
        now: float | None = None,
    ) -> ChainWindow:
        """The window of ``listing`` centred on the strike nearest to ``price`` (no registry access)."""
        count = self.default_strikes(listing.kind) if strikes is None else strikes
        if count < 1:
            raise ValueError(f"a chain window needs at least 1 strike, got {count}")
        atm = nearest_index(listing.strikes, price.value)
        ck = (listing.symbol, listing.exchange, listing.expiry.date, count, atm)
        if now is not None and (hit := self._windows.get(ck, now)) is not None and hit.listing is listing:
            return replace(hit, ltp=price.value, ltp_source=price.source)
        start, stop, below, above = window_bounds(atm, count, len(listing.strikes))
        made = ChainWindow(
            listing=listing,
            ltp=price.value,
            ltp_source=price.source,
            atm_index=atm,
            start=start,
            requested=count,
            truncated_below=below,
            truncated_above=above,
            rows=listing.rows[start:stop],
        )
        if now is not None:
            self._windows.put(ck, made, now)
        return made

    def recentred(self, window: ChainWindow, ltp: float, *, now: float | None = None) -> ChainWindow:
        """The same chain (strike count, listing) centred on a live ``ltp``."""
        return self.around(window.listing, ResolvedLtp(float(ltp), "live"), window.requested, now=now)

    def clear_cache(self) -> None:
        """Forget cached listings and windows (e.g. after the daily master refresh)."""
        self._listings.clear()
        self._windows.clear()
