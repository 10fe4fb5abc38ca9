"""The gateway's quotes to its replicas over the real NATS server (issue 20): the codec round-trips; a
replica that starts late takes a snapshot, then the deltas after it, and ends equal to the gateway; a
replica cut off from the broker (through a TCP proxy the test controls) shows every live price as stale,
never as live, and is equal again after the broker comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

import pinned
from proxies import Proxy
from tickgate.bus.codec import (
    BusFormatError,
    Fill,
    SnapshotChunk,
    Ticks,
    decode,
    encode_fill,
    encode_snapshot,
    encode_ticks,
)
from tickgate.bus.follower import QuoteFollower
from tickgate.bus.publisher import TickPublisher
from tickgate.dhan.batch import decode_batch
from tickgate.dhan.client import Credentials
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey, Quote, encode_packet
from tickgate.feed.quotes import SOURCE_REST, QuoteStore, RestQuote
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, RegistryUniverse, Simulator
from waiting import until

NATS = "nats://127.0.0.1:4222"
KEYS = [InstrumentKey(ExchangeSegment.NSE_FNO, 40_000 + i) for i in range(3_000)]
THIN = InstrumentKey(ExchangeSegment.NSE_FNO, 99_999)  # priced by REST only: no tick ever comes


@pytest.fixture
async def simulator_for_bus(master: Path, registry: InstrumentRegistry) -> AsyncIterator[Simulator]:
    sim = Simulator(
        universe=RegistryUniverse(registry, pinned.TODAY), master=master, today=pinned.TODAY, rate=2_000.0
    )
    await sim.start()
    yield sim
    await sim.close()


def frames_for(step: int, n: int = 64) -> list[bytes]:
    """``n`` one-packet frames of quotes whose prices depend on ``step``."""
    out = []
    for j in range(n):
        key = KEYS[(step * n + j) % len(KEYS)]
        price = 100.0 + step + j / 100
        q = Quote(
            key.segment,
            key.security_id,
            price,
            1,
            1_700_000_000 + step,
            price,
            step,
            5,
            7,
            99.0,
            98.0,
            101.0,
            97.0,
        )
        out.append(encode_packet(q))
    return out


class Gateway:
    """A store fed like the gateway's decoder feeds it, with its publisher told of each batch."""

    def __init__(self, publisher: Callable[[QuoteStore], TickPublisher] | None = None) -> None:
        self.store = QuoteStore()
        self.step = 0
        self.publisher = publisher(self.store) if publisher else None

    def tick(self, batches: int = 1) -> None:
        for _ in range(batches):
            frames = frames_for(self.step)
            self.store.apply(decode_batch(frames), time.monotonic_ns())
            if self.publisher is not None:
                self.publisher.frames(frames)
            self.step += 1


def same(a: QuoteStore, b: QuoteStore) -> bool:
    """Equal quotes key by key (ltp, ltt, volume, source, prev close), whatever the slot order."""
    for key in KEYS:
        qa, qb = a.get(key), b.get(key)
        if (qa is None) != (qb is None):
            return False
        if (
            qa is not None
            and qb is not None
            and (qa.ltp, qa.ltt, qa.volume, qa.source, qa.prev_close)
            != (
                qb.ltp,
                qb.ltt,
                qb.volume,
                qb.source,
                qb.prev_close,
            )
        ):
            return False
    return True


def test_the_codec_round_trips_ticks_fills_and_snapshots() -> None:
    gw = Gateway()
    gw.tick(60)
    frames = frames_for(3)
    ticks = decode(encode_ticks(7, frames), gw.store)
    assert isinstance(ticks, Ticks)
    assert (ticks.seq, ticks.frames) == (7, frames)
    rest = [RestQuote(KEYS[5], 12.5, prev_close=11.0, volume=9), RestQuote(KEYS[6], None, oi=3)]
    fill = decode(encode_fill(8, SOURCE_REST, rest), gw.store)
    assert isinstance(fill, Fill)
    assert (fill.seq, fill.source, fill.quotes) == (8, SOURCE_REST, rest)
    replica = QuoteStore()
    chunks = encode_snapshot(9, gw.store, max_bytes=100_000)
    assert len(chunks) > 3
    for raw in chunks:
        chunk = decode(raw, replica)
        assert isinstance(chunk, SnapshotChunk)
        assert (chunk.seq, chunk.chunks) == (9, len(chunks))
        replica.import_rows(chunk.packed, chunk.columns, time.monotonic_ns())
    assert len(replica) == len(gw.store)
    assert same(gw.store, replica)
    with pytest.raises(BusFormatError):
        decode(b"TGT1" + bytes(12) + b"\xff\xff\xff\x00", gw.store)  # a frame runs past the end
    with pytest.raises(BusFormatError):
        decode(b"XXXX", gw.store)


async def test_a_late_replica_takes_a_snapshot_then_the_deltas_and_survives_a_cut() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."  # this test's subjects only
    gw = Gateway(lambda store: TickPublisher(store, NATS, prefix=prefix))
    assert gw.publisher is not None
    await gw.publisher.start()
    proxy = Proxy()
    await proxy.start()
    replica = QuoteStore()
    follower = QuoteFollower(replica, f"nats://127.0.0.1:{proxy.port}", prefix=prefix)
    traffic_on = True

    async def traffic() -> None:
        while traffic_on:
            gw.tick()
            await asyncio.sleep(0.002)

    try:
        gw.tick(100)  # history the replica was not there for
        gw.store.fill([RestQuote(THIN, 55.5, prev_close=50.0)], time.monotonic_ns())  # a REST fill too
        feeding = asyncio.create_task(traffic())
        await follower.start()  # snapshot while the deltas keep coming
        assert follower.snapshots == 1
        assert follower.live
        traffic_on = False
        await feeding
        await until(lambda: follower.last_seq == gw.publisher.seq, 5, "the replica caught up")
        assert same(gw.store, replica)
        thin = replica.get(THIN)
        assert thin is not None
        assert (thin.ltp, thin.prev_close, thin.source) == (55.5, 50.0, "rest")

        await proxy.cut()
        await until(lambda: not follower.live, 5, "the replica noticed the cut")
        live = [q for q in replica.get_many(KEYS) if q is not None and q.source == "feed"]
        assert not live, "a price from a stream the replica lost is still shown as live"
        assert replica.get(KEYS[0]).source == "stale"  # type: ignore[union-attr]
        gw.tick(30)  # the market moves on while the replica is cut off
        await proxy.restore()
        await until(lambda: follower.live and follower.snapshots == 2, 15, "the replica resynchronised")
        gw.tick(5)
        await until(lambda: follower.last_seq == gw.publisher.seq, 5, "the replica caught up again")
        assert same(gw.store, replica)
        assert follower.gaps == 0 or follower.snapshots >= 2
    finally:
        traffic_on = False
        await follower.stop()
        await gw.publisher.stop()
        with contextlib.suppress(Exception):
            await proxy.cut()
    assert np.all(np.isfinite([q.ltp for q in replica.get_many(KEYS[:10]) if q is not None]))  # type: ignore[misc]


async def test_the_service_publishes_what_its_feed_applies(
    simulator_for_bus: Simulator, registry: InstrumentRegistry, tmp_path: Path
) -> None:
    """A whole service with a broker URL: its replica's store follows the live feed, REST fills included."""
    from tickgate.config import FeedClientSettings, Settings
    from tickgate.service import TickgateService

    feed = FeedClientSettings(open_interval_s=0.01, backoff_initial_s=0.1, startup_barrier_s=0.5)
    settings = Settings(
        feed=feed,
        data_dir=tmp_path,
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        bus_url=NATS,
        bus_prefix=f"t{uuid.uuid4().hex[:8]}.",  # this test's subjects only
    )
    svc = TickgateService(
        settings,
        credentials=lambda: Credentials(DEFAULT_CLIENT_ID, DEFAULT_TOKEN),
        feed_url=simulator_for_bus.url,
        registry=registry,
        clock=pinned.flowing(pinned.CLOCK_START),
        scheduler=False,
    )
    await svc.start()
    replica = QuoteStore()
    follower = QuoteFollower(replica, NATS, prefix=settings.bus_prefix)
    try:
        _user = await svc.store.users.create("bus")
        await svc.watchlists.add(_user[0].id, "RELIANCE", strikes=11)
        await until(svc.feed.all_up, 15, "the feed up")
        await follower.start()
        assert svc.publisher is not None
        await until(lambda: svc.publisher.published > 20, 15, "the gateway published")
        keys = list(svc.planner.desired())
        await until(
            lambda: all(
                (a := svc.quotes.get(k)) is None or ((b := replica.get(k)) is not None and a.ltp == b.ltp)
                for k in keys
            ),
            15,
            "the replica's prices are the gateway's",
        )
        priced = [k for k in keys if (q := replica.get(k)) is not None and q.source == "feed"]
        assert priced, "no live price reached the replica"
    finally:
        await follower.stop()
        await svc.stop()
