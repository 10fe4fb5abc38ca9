"""Value types of the instrument registry: what callers get back, never polars frames.

The registry keeps the master columnar; these small frozen objects are built only for the rows a caller
actually asks for, so other layers (planner, ATM engine, API) never depend on the storage format.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from tickgate.dhan.protocol import InstrumentKey

ExpiryKind = Literal["weekly", "monthly", "quarterly"]
MasterFormat = Literal["compact", "detailed"]


OPTION_INSTRUMENTS = frozenset({"OPTIDX", "OPTSTK", "OPTFUT", "OPTCUR"})
FUTURE_INSTRUMENTS = frozenset({"FUTIDX", "FUTSTK", "FUTCOM", "FUTCUR"})


def ist_today() -> dt.date:
    """Today's date on Indian exchanges by the process's configured clock (``Settings.make_clock``): the
    default of "from today on" queries whose caller did not pass a date. Services pass their own clock's."""
    from tickgate.config import get_settings

    return get_settings().make_clock().today()


class MasterFormatError(ValueError):
    """The file is not a usable Dhan scrip master; the message names the column and/or line."""


class AmbiguousSecurityIdError(LookupError):
    """A bare security id matched several segments (ids are unique per segment only): pass the segment."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """One scrip-master row, normalised: tick size in rupees, ``None`` instead of sentinel values."""

    key: InstrumentKey
    exchange: str
    segment: str
    instrument: str
    symbol: str
    trading_symbol: str
    display_name: str
    lot_size: int
    tick_size: float
    expiry: dt.date | None
    strike: float | None
    option_type: str | None
    expiry_flag: str | None
    underlying_symbol: str | None
    underlying_security_id: int | None = None

    @property
    def is_option(self) -> bool:
        return self.instrument in OPTION_INSTRUMENTS

    @property
    def is_future(self) -> bool:
        return self.instrument in FUTURE_INSTRUMENTS

    @property
    def is_derivative(self) -> bool:
        return self.is_option or self.is_future


class Expiry(NamedTuple):
    """An expiry date and its kind. The master only flags W/M; ``quarterly`` is derived (see registry)."""

    date: dt.date
    kind: ExpiryKind


class StrikeRow(NamedTuple):
    """One listed strike of an option chain with the keys of its call and put (either may be missing)."""

    strike: float
    ce: InstrumentKey | None
    pe: InstrumentKey | None


@dataclass(frozen=True, slots=True)
class RegistryStats:
    """What a load did: rows read, kept, skipped (by reason) and the make-up of what was kept."""

    format: MasterFormat
    separator: str
    rows_read: int
    rows_loaded: int
    skipped: dict[str, int] = field(default_factory=dict)
    first_skipped_line: dict[str, int] = field(default_factory=dict)
    by_exchange_segment: dict[str, int] = field(default_factory=dict)
    by_instrument: dict[str, int] = field(default_factory=dict)
    by_exchange_segment_instrument: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())
