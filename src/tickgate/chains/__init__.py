"""Option chains: ATM windows from listed strikes, recentring with hysteresis, and the Tier B universe.

* :mod:`tickgate.chains.atm` — :class:`AtmEngine` builds a :class:`ChainWindow` (N listed strikes centred on
  the listed strike nearest to the underlying's LTP) and says where the LTP came from;
* :mod:`tickgate.chains.tracker` — :class:`ChainTracker` decides when tracked windows move;
* :mod:`tickgate.chains.selector` — expiry selectors ("next 8 weekly + next 4 quarterly");
* :mod:`tickgate.chains.tierb` — the always-on universe, declared in TOML and resolved per day.
"""

from tickgate.chains.atm import (
    AtmEngine,
    ChainError,
    ChainListing,
    ChainWindow,
    ExpiryExpiredError,
    ExpiryNotListedError,
    LtpLookup,
    LtpSource,
    NoOptionsError,
    NoUnderlyingError,
    QuoteLookup,
    ResolvedLtp,
    UnknownSymbolError,
    ltp_from_quotes,
    nearest_index,
    quotes_from_ltp,
    resolve_ltp,
)
from tickgate.chains.cache import TtlCache
from tickgate.chains.selector import ExpirySelector, Selection, SelectorError
from tickgate.chains.tierb import (
    EntryReport,
    TierBConfigError,
    TierBDiff,
    TierBGroup,
    TierBPlan,
    TierBUniverse,
)
from tickgate.chains.tracker import ChainTracker, Recentre, recentre_target

__all__ = [
    "AtmEngine",
    "ChainError",
    "ChainListing",
    "ChainTracker",
    "ChainWindow",
    "EntryReport",
    "ExpiryExpiredError",
    "ExpiryNotListedError",
    "ExpirySelector",
    "LtpLookup",
    "LtpSource",
    "NoOptionsError",
    "NoUnderlyingError",
    "QuoteLookup",
    "Recentre",
    "ResolvedLtp",
    "Selection",
    "SelectorError",
    "TierBConfigError",
    "TierBDiff",
    "TierBGroup",
    "TierBPlan",
    "TierBUniverse",
    "TtlCache",
    "UnknownSymbolError",
    "ltp_from_quotes",
    "nearest_index",
    "quotes_from_ltp",
    "recentre_target",
    "resolve_ltp",
]
