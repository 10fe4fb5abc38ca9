"""Dhan live market feed v2 wire protocol, as pure functions over bytes (sans-I/O).

Nothing here touches a socket: requests are built as JSON text, responses are decoded from ``bytes``.
The network shell (:mod:`tickgate.dhan.client`) and the simulator (:mod:`tickgate.dhan.simulator`) both
sit on top of this module, so the client and the fake server can never disagree about the format.
Facts come from ``shared/docs/dhan-feed.md`` (Dhan v2 docs, annexure, the official SDK 2.3.0).
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import NamedTuple


class ExchangeSegment(IntEnum):
    """Feed segment: the JSON requests use the name, binary response headers use the number."""

    IDX_I = 0
    NSE_EQ = 1
    NSE_FNO = 2
    NSE_CURRENCY = 3
    BSE_EQ = 4
    MCX_COMM = 5
    BSE_CURRENCY = 7
    BSE_FNO = 8

    @classmethod
    def from_name(cls, name: str) -> ExchangeSegment:
        """``"NSE_EQ"`` → ``ExchangeSegment.NSE_EQ``; raises ``ValueError`` naming the bad value."""
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown exchange segment {name!r}") from None


# Scrip master (exchange id, segment letter) → feed segment. The one place this mapping lives.
MASTER_SEGMENTS: dict[tuple[str, str], ExchangeSegment] = {
    ("NSE", "I"): ExchangeSegment.IDX_I,
    ("BSE", "I"): ExchangeSegment.IDX_I,
    ("NSE", "E"): ExchangeSegment.NSE_EQ,
    ("NSE", "D"): ExchangeSegment.NSE_FNO,
    ("NSE", "C"): ExchangeSegment.NSE_CURRENCY,
    ("BSE", "E"): ExchangeSegment.BSE_EQ,
    ("BSE", "D"): ExchangeSegment.BSE_FNO,
    ("BSE", "C"): ExchangeSegment.BSE_CURRENCY,
    ("MCX", "M"): ExchangeSegment.MCX_COMM,
}


def segment_for_master(exchange: str, segment: str) -> ExchangeSegment | None:
    """Feed segment of a scrip-master row, or ``None`` when Dhan's feed does not carry that pair."""
    return MASTER_SEGMENTS.get((exchange, segment))


class FeedMode(Enum):
    """Subscription mode. Value = subscribe request code; unsubscribe is always subscribe + 1."""

    TICKER = 15
    QUOTE = 17
    FULL = 21

    @property
    def subscribe_code(self) -> int:
        return self.value

    @property
    def unsubscribe_code(self) -> int:
        return self.value + 1

    @property
    def rank(self) -> int:
        """Richness order (ticker < quote < full): when owners disagree, the richest mode wins."""
        return _MODE_RANK[self]

    @classmethod
    def from_request_code(cls, code: int) -> tuple[FeedMode, bool]:
        """``(mode, is_subscribe)`` for a request code; ``ValueError`` for anything else."""
        for mode in cls:
            if code == mode.subscribe_code:
                return mode, True
            if code == mode.unsubscribe_code:
                return mode, False
        raise ValueError(f"not a feed subscription request code: {code}")


_MODE_RANK = {FeedMode.TICKER: 0, FeedMode.QUOTE: 1, FeedMode.FULL: 2}


class InstrumentKey(NamedTuple):
    """What Dhan identifies an instrument by on the feed: (segment, security id)."""

    segment: ExchangeSegment
    security_id: int

    def __str__(self) -> str:
        return f"{self.segment.name}:{self.security_id}"

    @classmethod
    def parse(cls, text: str) -> InstrumentKey:
        """Inverse of ``str()``: ``"NSE_EQ:2885"``. ``ValueError`` with the reason on bad input."""
        seg, sep, sid = text.partition(":")
        if not sep or not sid.isdigit():
            raise ValueError(f"instrument key must look like SEGMENT:SECURITY_ID, got {text!r}")
        return cls(ExchangeSegment.from_name(seg), int(sid))
