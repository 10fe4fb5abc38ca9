"""The quote store: the latest state of every instrument, updated from decoded batches.

Columnar (numpy arrays indexed by a slot per instrument) so that applying a batch of thousands of packets
is a handful of vectorised assignments, not a Python loop. Readers never slow the writer: each slot carries
an update counter, and a consumer (the push channel, the option-chain endpoint) *pulls* what changed since
it last looked, at its own pace. A slow consumer therefore gets coalesced values (latest wins) and the
number of updates it skipped, and costs the feed nothing — no per-consumer queues to fill.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickgate.clock import SYSTEM_CLOCK, Clock
from tickgate.dhan.batch import PacketBatch
from tickgate.dhan.protocol import DEPTH_LEVELS, ExchangeSegment, InstrumentKey, ResponseCode

Array = np.ndarray[Any, np.dtype[Any]]

SOURCE_NONE, SOURCE_FEED, SOURCE_REST, SOURCE_SAVED, SOURCE_STALE = 0, 1, 2, 3, 4
# "stale": a replica's copy of a live price whose stream it lost (tickgate.bus): shown, never as live.
SOURCE_NAMES = ("none", "feed", "rest", "saved", "stale")


@dataclass(frozen=True, slots=True)
class RestQuote:
    """One instrument's snapshot from outside the feed (REST market quote, saved last close)."""

    key: InstrumentKey
    ltp: float | None
    prev_close: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    atp: float | None = None
    volume: int | None = None
    oi: int | None = None
    ltq: int | None = None
    prev_oi: int | None = None


_FLOAT_FIELDS = ("ltp", "atp", "open", "high", "low", "close", "prev_close")
_INT_FIELDS = (
    "ltt",
    "ltq",
    "volume",
    "total_buy_qty",
    "total_sell_qty",
    "oi",
    "oi_day_high",
    "oi_day_low",
    "prev_oi",
)
# Fields each packet type carries (besides ltp/ltt, merged across types in stream order).
_QUOTE_FIELDS = (
    "ltq",
    "atp",
    "volume",
    "total_sell_qty",
    "total_buy_qty",
    "open",
    "close",
    "high",
    "low",
)
_FULL_FIELDS = (*_QUOTE_FIELDS, "oi", "oi_day_high", "oi_day_low")
_LTP_CODES = (int(ResponseCode.TICKER), int(ResponseCode.QUOTE), int(ResponseCode.FULL))


def pack_key(segment: int, security_id: int) -> int:
    return (int(segment) << 32) | int(security_id)


@dataclass(frozen=True, slots=True)
class QuoteSnapshot:
    """One instrument's latest state (prices as floats; ``None`` where no packet has said yet)."""

    key: InstrumentKey
    ltp: float | None
    ltt: int | None
    ltq: int | None
    atp: float | None
    volume: int | None
    total_buy_qty: int | None
    total_sell_qty: int | None
    oi: int | None
    oi_day_high: int | None
    oi_day_low: int | None
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    prev_close: float | None
    prev_oi: int | None
    bids: tuple[tuple[float, int, int], ...]  # (price, qty, orders), best first
    asks: tuple[tuple[float, int, int], ...]
    updates: int
    updated_ns: int
    source: str = "none"  # where the price came from: feed, rest (a snapshot), saved (last close), none
    quoted_at: float | None = None  # when it did, on the service's clock (epoch seconds): its age

    @property
    def bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None

    @property
    def ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def change(self) -> float | None:
        if self.ltp is None or not self.prev_close:
            return None
        return self.ltp - self.prev_close

    @property
    def change_pct(self) -> float | None:
        change = self.change
        return None if change is None or not self.prev_close else 100.0 * change / self.prev_close

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": str(self.key),
            "ltp": self.ltp,
            "ltt": self.ltt,
            "ltq": self.ltq,
            "atp": self.atp,
            "volume": self.volume,
            "oi": self.oi,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "prev_close": self.prev_close,
            "change": self.change,
            "change_pct": self.change_pct,
            "bid": self.bid,
            "ask": self.ask,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "total_buy_qty": self.total_buy_qty,
            "total_sell_qty": self.total_sell_qty,
            "source": self.source,
            "quoted_at": self.quoted_at,
        }


class QuoteStore:
    """Latest state per instrument; see the module docstring for the design."""

    def __init__(self, capacity: int = 32_768, clock: Clock | None = None) -> None:
        """``clock``: the service's one clock, for when each price was received (its age)."""
        self._clock: Clock = clock or SYSTEM_CLOCK
        self._slot_of: dict[int, int] = {}
        self._keys: list[InstrumentKey] = []
        self._index_keys = np.empty(0, dtype=np.int64)  # sorted packed keys
        self._index_slots = np.empty(0, dtype=np.int64)
        self._capacity = 0
        self._cols: dict[str, Array] = {}
        self._grow(capacity)
        self.batches = 0
        self.packets = 0
        self._changed = asyncio.Event()
        # Told of every fill after it is applied (the gateway forwards fills to its replicas: tickgate.bus).
        self.on_fill: Callable[[Sequence[RestQuote], int], None] | None = None

    # -- storage -----------------------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        specs: dict[str, tuple[Any, tuple[int, ...], Any]] = {
            **{name: (np.float64, (), np.nan) for name in _FLOAT_FIELDS},
            **{name: (np.int64, (), -1) for name in _INT_FIELDS},
            "bid_price": (np.float64, (DEPTH_LEVELS,), np.nan),
            "ask_price": (np.float64, (DEPTH_LEVELS,), np.nan),
            "bid_qty": (np.int64, (DEPTH_LEVELS,), 0),
            "ask_qty": (np.int64, (DEPTH_LEVELS,), 0),
            "bid_orders": (np.int64, (DEPTH_LEVELS,), 0),
            "ask_orders": (np.int64, (DEPTH_LEVELS,), 0),
            "updates": (np.int64, (), 0),
            "updated_ns": (np.int64, (), 0),
            "ltp_seq": (np.int64, (), -1),
            "prev_from_code6": (np.bool_, (), False),
            "source": (np.int8, (), SOURCE_NONE),
            "quoted_at": (np.float64, (), np.nan),
        }
        for name, (dtype, shape, fill) in specs.items():
            column = np.full((capacity, *shape), fill, dtype=dtype)
            if old:
                column[:old] = self._cols[name][:old]
            self._cols[name] = column
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and pack_key(*key) in self._slot_of

    def register(self, keys: Iterable[InstrumentKey]) -> None:
        """Give instruments a slot ahead of their first tick (so readers can ask before data arrives)."""
        added: list[int] = []
        for key in keys:
            packed = pack_key(key.segment, key.security_id)
            if packed not in self._slot_of:
                self._add(packed, InstrumentKey(ExchangeSegment(key.segment), key.security_id))
                added.append(packed)
        if added:
            self._reindex(added)

    def _add(self, packed: int, key: InstrumentKey) -> int:
        slot = len(self._keys)
        if slot >= self._capacity:
            self._grow(self._capacity * 2)
        self._slot_of[packed] = slot
        self._keys.append(key)
        return slot

    def _reindex(self, added: list[int]) -> None:
        """Merge newly added keys into the sorted index: an O(n) insert, not a re-sort of every key (a
        chain add registers ~100 keys into a store that only grows over a session)."""
        new = np.sort(np.asarray(added, dtype=np.int64))
        slots = np.fromiter((self._slot_of[p] for p in new.tolist()), dtype=np.int64, count=len(new))
        at = np.searchsorted(self._index_keys, new)
        self._index_keys = np.insert(self._index_keys, at, new)
        self._index_slots = np.insert(self._index_slots, at, slots)

    def _slots_for(self, rows: Array) -> Array:
        """Slots of the rows' instruments, creating slots for instruments seen for the first time."""
        packed = (rows["segment"].astype(np.int64) << 32) | rows["security_id"].astype(np.int64)
        if len(self._index_keys):
            pos = np.searchsorted(self._index_keys, packed)
            pos_clipped = np.minimum(pos, len(self._index_keys) - 1)
            found = self._index_keys[pos_clipped] == packed
        else:
            found = np.zeros(len(packed), dtype=bool)
        if not found.all():
            fresh = np.unique(packed[~found]).tolist()
            for value in fresh:
                self._add(value, InstrumentKey(ExchangeSegment(value >> 32), value & 0xFFFFFFFF))
            self._reindex(fresh)
            return self._slots_for(rows)
        return self._index_slots[pos_clipped]

    # -- writing -----------------------------------------------------------------------------------------

    def apply(self, batch: PacketBatch, now_ns: int, in_session: Array | None = None) -> int:
        """Fold a decoded batch into the store; returns the number of packets applied.

        Previous close, as both of Dhan's described behaviours send it: a PrevClose packet (code 6) always
        sets it; a Quote/Full ``close`` sets it only for an instrument with no code 6 yet, and only while
        its segment is in session (``in_session``: a bool per segment code; None: never), because after
        the close that field is the day's close. Where code 6 comes for indices only, the others' previous
        close thus comes from their quotes during the day (and from REST backfill)."""
        cols = self._cols
        applied = 0
        slots_by_code: dict[int, Array] = {}
        for code, rows in batch.arrays.items():
            slots = self._slots_for(rows)
            slots_by_code[code] = slots
            applied += len(rows)
            if code == ResponseCode.PREV_CLOSE:
                cols["prev_close"][slots] = rows["prev_close"]
                cols["prev_oi"][slots] = rows["prev_oi"]
                cols["prev_from_code6"][slots] = True
            elif code == ResponseCode.OI:
                cols["oi"][slots] = rows["oi"]
            elif code == ResponseCode.QUOTE:
                for name in _QUOTE_FIELDS:
                    cols[name][slots] = rows[name]
            elif code == ResponseCode.FULL:
                for name in _FULL_FIELDS:
                    cols[name][slots] = rows[name]
                depth = rows["depth"]
                for name in ("bid_price", "ask_price", "bid_qty", "ask_qty", "bid_orders", "ask_orders"):
                    cols[name][slots] = depth[name]
            if in_session is not None and code in (ResponseCode.QUOTE, ResponseCode.FULL):
                close = rows["close"]
                take = (close > 0) & ~cols["prev_from_code6"][slots] & in_session[rows["segment"]]
                if take.any():
                    cols["prev_close"][slots[take]] = close[take]
        self._apply_ltp(batch, slots_by_code)
        priced = [slots_by_code[c] for c in _LTP_CODES if c in slots_by_code]
        if priced:
            at = np.concatenate(priced)
            cols["source"][at] = SOURCE_FEED
            cols["quoted_at"][at] = self._clock.timestamp()
        if applied:
            touched = np.concatenate(list(slots_by_code.values()))
            counts = np.bincount(touched, minlength=len(self._keys))
            cols["updates"][: len(counts)] += counts
            cols["updated_ns"][touched] = now_ns
            self.batches += 1
            self.packets += applied
            self._changed.set()
        return applied

    def _apply_ltp(self, batch: PacketBatch, slots_by_code: dict[int, Array]) -> None:
        """LTP/LTT come from three packet types: the one latest in the stream wins."""
        parts = [code for code in _LTP_CODES if code in batch.arrays]
        if not parts:
            return
        if len(parts) == 1:
            code = parts[0]
            slots, rows = slots_by_code[code], batch.arrays[code]
            self._cols["ltp"][slots] = rows["ltp"]
            self._cols["ltt"][slots] = rows["ltt"]
            return
        slots = np.concatenate([slots_by_code[c] for c in parts])
        seqs = np.concatenate([batch.seqs[c] for c in parts])
        ltp = np.concatenate([batch.arrays[c]["ltp"].astype(np.float64) for c in parts])
        ltt = np.concatenate([batch.arrays[c]["ltt"].astype(np.int64) for c in parts])
        order = np.argsort(seqs, kind="stable")
        self._cols["ltp"][slots[order]] = ltp[order]  # repeated slots: the last (latest) value is kept
        self._cols["ltt"][slots[order]] = ltt[order]

    def fill(self, quotes: Sequence[RestQuote], now_ns: int, source: int = SOURCE_REST) -> int:
        """Snapshots taken outside the feed (Dhan's REST market quote, or the last close saved at end of
        day): they price instruments the feed has not priced yet, and give every instrument its previous
        close where no PrevClose packet did. A price from the feed is never overwritten: it is newer.
        Returns how many instruments were priced."""
        if not quotes:
            return 0
        cols = self._cols
        keys = [q.key for q in quotes]
        self.register(keys)
        packed = (pack_key(k.segment, k.security_id) for k in keys)
        slots = np.fromiter((self._slot_of[p] for p in packed), np.int64, len(keys))
        n = len(quotes)

        def column(name: str) -> Array:
            """The quotes' ``name`` as float64, NaN where absent (one pass, then numpy from here on)."""
            return np.fromiter(
                (np.nan if (v := getattr(q, name)) is None else v for q in quotes), np.float64, n
            )

        prev = column("prev_close")
        take_prev = ~np.isnan(prev) & (prev > 0) & ~cols["prev_from_code6"][slots]
        cols["prev_close"][slots[take_prev]] = prev[take_prev]
        prev_oi = column("prev_oi")
        take_oi = ~np.isnan(prev_oi) & (cols["prev_oi"][slots] < 0)
        cols["prev_oi"][slots[take_oi]] = prev_oi[take_oi]
        ltp = column("ltp")
        fresh = (cols["source"][slots] != SOURCE_FEED) & ~np.isnan(ltp)
        at = slots[fresh]
        cols["ltp"][at] = ltp[fresh]
        for name in ("open", "high", "low", "atp"):
            values = column(name)[fresh]
            given = ~np.isnan(values)
            cols[name][at[given]] = values[given]
        for name in ("volume", "oi", "ltq"):
            values = column(name)[fresh]
            given = ~np.isnan(values)
            cols[name][at[given]] = values[given].astype(np.int64)
        cols["source"][at] = source
        cols["quoted_at"][at] = self._clock.timestamp()
        priced = int(fresh.sum())
        cols["updates"][slots] += 1
        cols["updated_ns"][slots] = now_ns
        self._changed.set()
        if self.on_fill is not None:
            self.on_fill(quotes, source)
        return priced

    # -- copying (a replica's store follows the gateway's: tickgate.bus) ------------------------------------

    def layout(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Each column's name, dtype and per-row shape, in a fixed order: what a row export carries."""
        return [(name, col.dtype.str, col.shape[1:]) for name, col in sorted(self._cols.items())]

    def export_rows(self, start: int, stop: int) -> tuple[Array, dict[str, Array]]:
        """Slots ``start:stop``: their packed keys and a copy of every column."""
        stop = min(stop, len(self._keys))
        keys = self._keys[start:stop]
        packed = np.fromiter((pack_key(k.segment, k.security_id) for k in keys), np.int64, len(keys))
        return packed, {name: col[start:stop].copy() for name, col in self._cols.items()}

    def import_rows(self, packed: Array, columns: dict[str, Array], now_ns: int) -> None:
        """Another store's rows (:meth:`export_rows`) written over this one's, key by key."""
        keys = [InstrumentKey(ExchangeSegment(int(p) >> 32), int(p) & 0xFFFFFFFF) for p in packed.tolist()]
        self.register(keys)
        slots = np.fromiter((self._slot_of[int(p)] for p in packed.tolist()), np.int64, len(keys))
        for name, values in columns.items():
            self._cols[name][slots] = values
        self._cols["updated_ns"][slots] = now_ns
        self._changed.set()

    def mark_stale(self) -> int:
        """Every live price becomes stale (its stream was lost); returns how many."""
        live = self._cols["source"] == SOURCE_FEED
        self._cols["source"][live] = SOURCE_STALE
        self._changed.set()
        return int(live.sum())

    def priced(self, segments: set[ExchangeSegment] | frozenset[ExchangeSegment]) -> list[RestQuote]:
        """Every instrument of ``segments`` with a price, as a snapshot (what end of day saves)."""
        c = self._cols
        n = len(self._keys)
        wanted = np.zeros(256, dtype=bool)
        for segment in segments:
            wanted[int(segment)] = True
        codes = np.fromiter((int(k.segment) for k in self._keys), dtype=np.int64, count=n)
        slots = np.flatnonzero(wanted[codes] & ~np.isnan(c["ltp"][:n]))

        def num(name: str, slot: int) -> float | None:
            value = float(c[name][slot])
            return None if math.isnan(value) else value

        def count(name: str, slot: int) -> int | None:
            value = int(c[name][slot])
            return None if value < 0 else value

        return [
            RestQuote(
                self._keys[slot],
                num("ltp", slot),
                prev_close=num("prev_close", slot),
                open=num("open", slot),
                high=num("high", slot),
                low=num("low", slot),
                volume=count("volume", slot),
                oi=count("oi", slot),
                prev_oi=count("prev_oi", slot),
            )
            for slot in slots.tolist()
        ]

    # -- reading -----------------------------------------------------------------------------------------

    def get(self, key: InstrumentKey) -> QuoteSnapshot | None:
        slot = self._slot_of.get(pack_key(key.segment, key.security_id))
        return None if slot is None else self._snapshot(slot)

    def get_many(self, keys: Sequence[InstrumentKey]) -> list[QuoteSnapshot | None]:
        return [self.get(key) for key in keys]

    def option_columns(self, keys: Sequence[InstrumentKey]) -> dict[str, Array]:
        """What option analytics read, for ``keys`` at once, as float64 arrays (NaN where unknown): ltp,
        best bid and ask, oi, prev_oi, volume; and ``updates`` (0 for a key never seen), whose sum tells a
        cache whether anything changed."""
        n = len(keys)
        found = [self._slot_of.get(pack_key(k.segment, k.security_id), -1) for k in keys]
        slots = np.fromiter(found, np.int64, n)
        known = slots >= 0
        at = slots[known]
        c = self._cols
        out: dict[str, Array] = {}
        for name, column in (("ltp", c["ltp"]), ("bid", c["bid_price"]), ("ask", c["ask_price"])):
            values = np.full(n, np.nan)
            values[known] = column[at] if column.ndim == 1 else column[at, 0]
            out[name] = values
        for name in ("oi", "prev_oi", "volume"):
            values = np.full(n, np.nan)
            raw = c[name][at].astype(np.float64)
            raw[raw < 0] = np.nan  # never set
            values[known] = raw
            out[name] = values
        updates = np.zeros(n)
        updates[known] = c["updates"][at]
        out["updates"] = updates
        return out

    def slot_of(self, key: InstrumentKey) -> int | None:
        """The key's slot (stable for the store's lifetime), None if never registered nor ticked."""
        return self._slot_of.get(pack_key(key.segment, key.security_id))

    def updates_at(self, slot: int) -> int:
        """Packets folded into the slot so far: a cheap "has it changed" check for readers that cache."""
        return int(self._cols["updates"][slot])

    def snapshot_at(self, slot: int) -> QuoteSnapshot:
        return self._snapshot(slot)

    def _snapshot(self, slot: int) -> QuoteSnapshot:
        c = self._cols

        def f(name: str) -> float | None:
            value = float(c[name][slot])
            return None if math.isnan(value) else value  # NaN = never set

        def i(name: str) -> int | None:
            value = int(c[name][slot])
            return None if value < 0 else value

        def levels(side: str) -> tuple[tuple[float, int, int], ...]:
            prices = c[f"{side}_price"][slot]
            qty, orders = c[f"{side}_qty"][slot], c[f"{side}_orders"][slot]
            return tuple(
                (float(p), int(q), int(o))
                for p, q, o in zip(prices.tolist(), qty.tolist(), orders.tolist(), strict=True)
                if not math.isnan(p)
            )

        return QuoteSnapshot(
            key=self._keys[slot],
            ltp=f("ltp"),
            ltt=i("ltt"),
            ltq=i("ltq"),
            atp=f("atp"),
            volume=i("volume"),
            total_buy_qty=i("total_buy_qty"),
            total_sell_qty=i("total_sell_qty"),
            oi=i("oi"),
            oi_day_high=i("oi_day_high"),
            oi_day_low=i("oi_day_low"),
            open=f("open"),
            high=f("high"),
            low=f("low"),
            close=f("close"),
            prev_close=f("prev_close"),
            prev_oi=i("prev_oi"),
            bids=levels("bid"),
            asks=levels("ask"),
            updates=int(c["updates"][slot]),
            source=SOURCE_NAMES[int(c["source"][slot])],
            quoted_at=f("quoted_at"),
            updated_ns=int(c["updated_ns"][slot]),
        )

    def watch(self, keys: Iterable[InstrumentKey] = ()) -> QuoteWatch:
        """A pull-based consumer over ``keys`` (changeable later)."""
        return QuoteWatch(self, keys)

    async def wait_changed(self) -> None:
        """Return after the next batch is applied (all waiters wake; they then pull what they need)."""
        self._changed.clear()
        await self._changed.wait()


class QuoteWatch:
    """A consumer's view: which of its instruments changed since it last took, coalesced."""

    def __init__(self, store: QuoteStore, keys: Iterable[InstrumentKey]) -> None:
        self.store = store
        self._keys: list[InstrumentKey] = []
        self._slots = np.empty(0, dtype=np.int64)
        self._seen = np.empty(0, dtype=np.int64)
        self.delivered = 0
        self.coalesced = 0  # updates skipped because a newer value replaced them before we took
        self.set_keys(keys)

    @property
    def keys(self) -> list[InstrumentKey]:
        return list(self._keys)

    def set_keys(self, keys: Iterable[InstrumentKey]) -> None:
        """Replace the watched set. Newly watched instruments count as changed (the consumer needs them)."""
        keys = list(dict.fromkeys(keys))
        self.store.register(keys)
        previous = dict(zip(self._keys, self._seen.tolist(), strict=True))
        slot_of = self.store._slot_of
        self._keys = keys
        self._slots = np.array([slot_of[pack_key(k.segment, k.security_id)] for k in keys], dtype=np.int64)
        self._seen = np.array([previous.get(k, -1) for k in keys], dtype=np.int64)

    def take(self) -> list[QuoteSnapshot]:
        """Snapshots of every watched instrument updated since the last ``take`` (each once, latest)."""
        return [self.store._snapshot(slot) for slot in self.take_slots()]

    def take_slots(self) -> list[int]:
        """Like :meth:`take`, as quote-store slots (for readers that render from a shared per-slot cache)."""
        if not len(self._slots):
            return []
        updates = self.store._cols["updates"][self._slots]
        changed = np.flatnonzero(updates != self._seen)
        if not len(changed):
            return []
        previous = self._seen[changed]
        current = updates[changed]
        known = previous >= 0
        self.coalesced += int((current[known] - previous[known] - 1).clip(min=0).sum())
        self._seen[changed] = current
        self.delivered += len(changed)
        slots: list[int] = self._slots[changed].tolist()
        return slots
