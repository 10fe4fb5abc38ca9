"""The live feed: connection pool + planner + decoder + quote store, on one event loop."""

from tickgate.feed.manager import FeedManager, FeedMetrics
from tickgate.feed.quotes import QuoteSnapshot, QuoteStore, QuoteWatch

__all__ = ["FeedManager", "FeedMetrics", "QuoteSnapshot", "QuoteStore", "QuoteWatch"]
