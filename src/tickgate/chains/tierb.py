"""The Tier B universe: the always-on instruments, declared as rules in a TOML file, resolved per day.

The file (default: the shipped ``tickgate/data/tier_b.toml``, or ``settings.chains.tier_b`` /
``TICKGATE_TIER_B``) lists option chains by *expiry selector* and futures by symbol, never by date or
security id, so resolving it against today's master with today's date rolls expired contracts to the next
ones. :meth:`TierBUniverse.resolve` returns a :class:`TierBPlan`: planner groups (id, keys, mode) plus a
report per entry of what was asked and what was found — the exchanges change their calendars (weeklies
withdrawn) and Tier B must keep working with what exists while saying what is missing.

Group ids: ``B:<SYMBOL>:<YYYY-MM-DD>`` per option chain, ``B:<name>:FUT`` per futures entry.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from tickgate.chains.atm import (
    AtmEngine,
    ChainError,
    ChainWindow,
    LtpLookup,
    QuoteLookup,
    quotes_from_ltp,
)
from tickgate.chains.selector import ExpirySelector, SelectorError
from tickgate.config import ChainSettings, get_settings
from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.instruments.model import Expiry
from tickgate.instruments.registry import InstrumentRegistry
from tickgate.planner.types import GroupId

SHIPPED = "tickgate/data/tier_b.toml"

PlacedLookup = Callable[[str, dt.date], float | None]
"""(symbol, expiry) → the ATM strike its window last sat on (the ATM cache), or None."""


class TierBConfigError(ValueError):
    """The universe file is unreadable or invalid; the message names the file and the field."""


# ------------------------------------------------------------------------------------------ the file


def _mode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return FeedMode[value.strip().upper()]
        except KeyError:
            raise ValueError(f"mode must be ticker, quote or full, got {value!r}") from None
    return value


def _selector(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ExpirySelector.parse(value)
        except SelectorError as exc:
            raise ValueError(str(exc)) from None
    return value


Mode = Annotated[FeedMode, BeforeValidator(_mode)]
Selector = Annotated[ExpirySelector, BeforeValidator(_selector)]


def _upper(value: str) -> str:
    return value.strip().upper()


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class Defaults(_Strict):
    mode: Mode = FeedMode.QUOTE
    strikes: int = Field(101, ge=1)


class OptionsEntry(_Strict):
    """Option chains of one symbol: the expiries a selector picks, ``strikes`` around the money each."""

    symbol: str
    exchange: str | None = None
    expiries: Selector
    strikes: int | None = Field(None, ge=1)
    mode: Mode | None = None

    @field_validator("symbol")
    @classmethod
    def _norm_symbol(cls, value: str) -> str:
        return _upper(value)

    @field_validator("exchange")
    @classmethod
    def _norm_exchange(cls, value: str | None) -> str | None:
        return None if value is None else _upper(value)


class FuturesEntry(_Strict):
    """The nearest ``contracts`` futures of each symbol, as one group."""

    name: str
    exchange: str | None = None
    symbols: list[str] = Field(min_length=1)
    contracts: int = Field(1, ge=1)
    mode: Mode | None = None

    @field_validator("symbols")
    @classmethod
    def _norm_symbols(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_upper(s) for s in value))

    @field_validator("exchange")
    @classmethod
    def _norm_exchange(cls, value: str | None) -> str | None:
        return None if value is None else _upper(value)


class _File(_Strict):
    defaults: Defaults = Defaults()
    options: list[OptionsEntry] = []
    futures: list[FuturesEntry] = []


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class TierBGroup:
    """One planner group: ``planner.add_group(group, Tier.B, keys, mode, owner, now)``."""

    group: GroupId
    keys: tuple[InstrumentKey, ...]
    mode: FeedMode
    description: str
    entry: str
    expiry: Expiry | None = None
    window: ChainWindow | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class EntryReport:
    """One universe entry: asked vs found, which expiries/contracts were chosen, its size, and notes
    (shortfalls, truncated windows, missing symbols) for the operator."""

    entry: str
    kind: Literal["options", "futures"]
    rule: str
    asked: int
    found: int
    chosen: tuple[str, ...]
    groups: tuple[GroupId, ...]
    size: int
    """Distinct keys of the entry's groups."""
    shortfalls: tuple[str, ...] = ()
    """Why fewer were found than asked (one sentence per short selector term or missing symbol)."""
    notes: tuple[str, ...] = ()
    """Everything else worth knowing (truncated windows)."""

    @property
    def shortfall(self) -> int:
        return max(0, self.asked - self.found)


@dataclass(frozen=True)
class TierBDiff:
    """What changed between two resolutions (e.g. yesterday's and today's): the roll."""

    added: tuple[TierBGroup, ...]
    removed: tuple[GroupId, ...]
    changed: tuple[TierBGroup, ...]
    """Same group id, different keys or mode: ``replace_keys`` / ``set_mode``."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True)
class TierBPlan:
    today: dt.date
    groups: tuple[TierBGroup, ...]
    reports: tuple[EntryReport, ...]
    source: str = SHIPPED

    def keys(self) -> tuple[InstrumentKey, ...]:
        """Distinct keys over all groups (the underlying of several chains counts once)."""
        return tuple(dict.fromkeys(k for g in self.groups for k in g.keys))

    @property
    def total(self) -> int:
        """Distinct instruments: what Tier B costs the feed."""
        return len(self.keys())

    @property
    def summed(self) -> int:
        """Sum of group sizes (shared keys counted per group)."""
        return sum(g.size for g in self.groups)

    def group(self, group_id: GroupId) -> TierBGroup:
        for g in self.groups:
            if g.group == group_id:
                return g
        raise KeyError(group_id)

    def shortfalls(self) -> list[str]:
        """Every shortfall of every entry, prefixed with the entry."""
        return [f"{r.entry}: {n}" for r in self.reports for n in r.shortfalls]

    def diff(self, previous: TierBPlan | None) -> TierBDiff:
        """Groups to add, remove and replace to go from ``previous`` to this plan."""
        before = {g.group: g for g in previous.groups} if previous else {}
        now = {g.group: g for g in self.groups}
        return TierBDiff(
            added=tuple(g for gid, g in now.items() if gid not in before),
            removed=tuple(gid for gid in before if gid not in now),
            changed=tuple(
                g
                for gid, g in now.items()
                if gid in before and (set(g.keys) != set(before[gid].keys) or g.mode != before[gid].mode)
            ),
        )


# -------------------------------------------------------------------------------------- the universe


@dataclass(frozen=True)
class TierBUniverse:
    defaults: Defaults
    options: tuple[OptionsEntry, ...]
    futures: tuple[FuturesEntry, ...]
    source: str = SHIPPED

    @classmethod
    def load(cls, path: Path | str | None = None, *, settings: ChainSettings | None = None) -> TierBUniverse:
        """Read the universe: ``path``, else ``settings.chains.tier_b``, else the shipped default."""
        if path is None:
            path = (settings if settings is not None else get_settings().chains).tier_b
        if path is None:
            text = resources.files("tickgate.data").joinpath("tier_b.toml").read_text(encoding="utf-8")
            return cls.parse(text, SHIPPED)
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise TierBConfigError(f"cannot read Tier B universe {p}: {exc.strerror or exc}") from None
        return cls.parse(text, str(p))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> TierBUniverse:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TierBConfigError(f"{source}: not valid TOML: {exc}") from None
        try:
            f = _File.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise TierBConfigError(f"{source}: {problems}") from None
        seen: set[str] = set()
        for o in f.options:
            if o.symbol in seen:
                raise TierBConfigError(f"{source}: options for {o.symbol} are declared twice")
            seen.add(o.symbol)
        names = [x.name for x in f.futures]
        if len(set(names)) != len(names):
            raise TierBConfigError(f"{source}: futures entry names must be unique, got {names}")
        return cls(f.defaults, tuple(f.options), tuple(f.futures), source)

    def resolve(
        self,
        registry: InstrumentRegistry,
        today: dt.date,
        ltp_of: LtpLookup | None = None,
        *,
        engine: AtmEngine | None = None,
        placed: PlacedLookup | None = None,
    ) -> TierBPlan:
        """The groups for ``today``: expiries chosen among those not expired on ``today`` (an expiry
        today still trades), windows centred on the underlying's price (``ltp_of`` when given, else the
        engine's quotes), else on the ATM each window last sat on (``placed``: a restart comes back on the
        same windows, not on guesses that the first live prices would move), else on the middle of each
        listing."""
        engine = engine if engine is not None else AtmEngine(registry)
        quotes = quotes_from_ltp(ltp_of) if ltp_of is not None else None
        groups: list[TierBGroup] = []
        reports: list[EntryReport] = []
        for o in self.options:
            g, r = self._options(o, registry, engine, today, quotes, placed=placed)
            groups += g
            reports.append(r)
        for fe in self.futures:
            g, r = self._futures(fe, registry, today)
            groups += g
            reports.append(r)
        return TierBPlan(today, tuple(groups), tuple(reports), self.source)

    def _options(
        self,
        o: OptionsEntry,
        registry: InstrumentRegistry,
        engine: AtmEngine,
        today: dt.date,
        quotes: QuoteLookup | None,
        *,
        placed: PlacedLookup | None = None,
    ) -> tuple[list[TierBGroup], EntryReport]:
        mode = o.mode or self.defaults.mode
        count = o.strikes or self.defaults.strikes
        rule = f"{o.expiries}, {count} strikes"
        listed = registry.option_expiries(o.symbol, today, exchange=o.exchange)
        selection = o.expiries.select(listed)
        short = selection.shortfalls()
        if not listed:
            short.insert(0, f"no {o.symbol} options listed from {today}")
        notes: list[str] = []
        groups: list[TierBGroup] = []
        for e in selection.expiries:
            atm = placed(o.symbol, e.date) if placed is not None else None  # below any price known
            try:
                w = engine.window(
                    o.symbol, e.date, count, ltp=atm, quotes=quotes, exchange=o.exchange, today=today
                )
            except ChainError as exc:
                short.append(f"{e.date}: {exc}")
                continue
            if w.note:
                notes.append(w.note)
            groups.append(
                TierBGroup(
                    group=f"B:{o.symbol}:{e.date.isoformat()}",
                    keys=w.keys(),
                    mode=mode,
                    description=w.describe(),
                    entry=o.symbol,
                    expiry=e,
                    window=w,
                )
            )
        report = EntryReport(
            entry=o.symbol,
            kind="options",
            rule=rule,
            asked=selection.asked,
            found=len(groups),
            chosen=tuple(f"{g.expiry.date} {g.expiry.kind}" for g in groups if g.expiry),
            groups=tuple(g.group for g in groups),
            size=_distinct(groups),
            shortfalls=tuple(short),
            notes=tuple(notes),
        )
        return groups, report

    def _futures(
        self, fe: FuturesEntry, registry: InstrumentRegistry, today: dt.date
    ) -> tuple[list[TierBGroup], EntryReport]:
        mode = fe.mode or self.defaults.mode
        keys: list[InstrumentKey] = []
        chosen: list[str] = []
        notes: list[str] = []
        for sym in fe.symbols:
            contracts = registry.futures(sym, today, exchange=fe.exchange)[: fe.contracts]
            if len(contracts) < fe.contracts:
                what = "no contract" if not contracts else f"only {len(contracts)} contracts"
                notes.append(f"{sym}: {what} listed from {today} (asked {fe.contracts})")
            for c in contracts:
                keys.append(c.key)
                chosen.append(c.trading_symbol)
        gid = f"B:{fe.name}:FUT"
        groups = []
        if keys:
            desc = f"{fe.name} futures, nearest {fe.contracts}: " + ", ".join(chosen)
            groups.append(TierBGroup(gid, tuple(dict.fromkeys(keys)), mode, desc, fe.name))
        report = EntryReport(
            entry=f"{fe.name} futures",
            kind="futures",
            rule=f"nearest {fe.contracts} of {len(fe.symbols)} symbols",
            asked=fe.contracts * len(fe.symbols),
            found=len(keys),
            chosen=tuple(chosen),
            groups=(gid,) if keys else (),
            size=_distinct(groups),
            shortfalls=tuple(notes),
        )
        return groups, report


def _distinct(groups: Iterable[TierBGroup]) -> int:
    return len({k for g in groups for k in g.keys})
