"""The application core the API serves: watchlists, chains, Tier B, end of day, recovery."""

from tickgate.service.app import TickgateService
from tickgate.service.errors import CapacityExceeded, InvalidInput, NotFound, NotReady, ServiceError
from tickgate.service.watchlists import AddResult, WatchlistManager

__all__ = [
    "AddResult",
    "CapacityExceeded",
    "InvalidInput",
    "NotFound",
    "NotReady",
    "ServiceError",
    "TickgateService",
    "WatchlistManager",
]
