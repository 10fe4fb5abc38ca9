"""Option chains: ATM windows from listed strikes, recentring with hysteresis, and the Tier B universe.

* :mod:`tickgate.chains.atm` — :class:`AtmEngine` builds a :class:`ChainWindow` (N listed strikes centred on
  the listed strike nearest to the underlying's LTP) and says where the LTP came from;
* :mod:`tickgate.chains.tracker` — :class:`ChainTracker` decides when tracked windows move;
* :mod:`tickgate.chains.selector` — expiry selectors ("next 8 weekly + next 4 quarterly");
* :mod:`tickgate.chains.tierb` — the always-on universe, declared in TOML and resolved per day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tickgate._lazy import lazy_attributes

# Imported on first use (as tickgate.instruments does): registering ``tickgate tierb`` on the command line
# imports this package, and the ATM engine pulls in the registry, polars and numpy.
if TYPE_CHECKING:
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

_LAZY = {
    "AtmEngine": "atm",
    "ChainError": "atm",
    "ChainListing": "atm",
    "ChainTracker": "tracker",
    "ChainWindow": "atm",
    "EntryReport": "tierb",
    "ExpiryExpiredError": "atm",
    "ExpiryNotListedError": "atm",
    "ExpirySelector": "selector",
    "LtpLookup": "atm",
    "LtpSource": "atm",
    "NoOptionsError": "atm",
    "NoUnderlyingError": "atm",
    "QuoteLookup": "atm",
    "Recentre": "tracker",
    "ResolvedLtp": "atm",
    "Selection": "selector",
    "SelectorError": "selector",
    "TierBConfigError": "tierb",
    "TierBDiff": "tierb",
    "TierBGroup": "tierb",
    "TierBPlan": "tierb",
    "TierBUniverse": "tierb",
    "TtlCache": "cache",
    "UnknownSymbolError": "atm",
    "ltp_from_quotes": "atm",
    "nearest_index": "atm",
    "quotes_from_ltp": "atm",
    "recentre_target": "tracker",
    "resolve_ltp": "atm",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


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
