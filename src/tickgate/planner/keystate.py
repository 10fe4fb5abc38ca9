"""The planner's per-instrument state: one small list of ints per desired key, and its named accessors.

Why a list of ints and not an object: this is the hottest data in the planner (25,000 entries, touched by
every connection event and every add), and a list is one allocation with indexed access and no enum
hashing. Lists no longer desired are kept for reuse (the planner's spare pool), so churn allocates no new
GC-tracked objects and the collector's pauses stay out of the add and remove latency (the measurements are
in ``docs/decisions/0002-measured-tradeoffs.md``).

The hot loops of :mod:`tickgate.planner.core` index a row with the constants below directly; everything else
reads it through the accessors, which say what each field means.
"""

from __future__ import annotations

from tickgate.dhan.protocol import FeedMode

KeyRow = list[int]

MODES: tuple[FeedMode, ...] = tuple(sorted(FeedMode, key=lambda m: m.rank))
"""Modes ordered by richness; a row's per-mode counters are indexed by position in this tuple."""
MODE_INDEX: dict[FeedMode, int] = {m: i for i, m in enumerate(MODES)}
N_MODES = len(MODES)
TOP = N_MODES - 1  # index of the richest mode

REFS = 0  # groups wanting the key, suspended or not: what admission charges against capacity
TIER_B_REFS = 1  # Tier B groups among them: per-tier accounting
ACTIVE = 2  # active (not suspended) groups wanting it: the key is placed iff this is > 0
SLOT = 3  # where it is placed: connection * N_MODES + mode index, -1 when not placed
MODE_COUNT = 4  # MODE_COUNT + i: active groups wanting it in mode MODES[i]; the richest non-zero one wins
BLANK: KeyRow = [0, 0, 0, -1] + [0] * N_MODES
"""A fresh row (copied, or assigned into a reused one)."""


def target(row: KeyRow) -> int:
    """Index of the richest mode among the key's active owners, -1 when no active group wants it."""
    if not row[ACTIVE]:
        return -1
    i = TOP
    while not row[MODE_COUNT + i]:
        i -= 1
    return i


def refs(row: KeyRow | None) -> int:
    """How many groups (suspended or not) want the key; 0 for a key not in the table."""
    return row[REFS] if row else 0


def wanted_by_tier_b(row: KeyRow) -> bool:
    return row[TIER_B_REFS] > 0


def wanted_by_tier_a(row: KeyRow) -> bool:
    """Some users' chain (Tier A) wants the key, whether or not Tier B does too."""
    return row[REFS] > row[TIER_B_REFS]


def placement(row: KeyRow) -> tuple[int, FeedMode] | None:
    """(connection, mode) the key is placed on, None when it is not placed."""
    slot = row[SLOT]
    if slot < 0:
        return None
    conn, mode = divmod(slot, N_MODES)
    return conn, MODES[mode]


def slot_of(connection: int, mode_index: int) -> int:
    """The ``SLOT`` value of a placement."""
    return connection * N_MODES + mode_index
