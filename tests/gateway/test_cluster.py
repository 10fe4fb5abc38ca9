"""The split mode end to end (issue 20): two gateways (active and standby) and two `tickgate api` replicas as
real processes on the real PostgreSQL and NATS, against the simulator; push clients on the replicas.

One scenario, each fault in turn, with the other replica's clients watched throughout:
- a write through a replica runs once on the gateway, and its retry with the same idempotency key gets the
  first answer (a new key is a second add, answered `touched`); the other replica reads it from PostgreSQL
  and sees it placed (the plan digest);
- a slow push client (it never reads) is dropped without slowing the others;
- kill -9 of one replica: the other replica's clients are not disturbed;
- the broker cut at a replica (a TCP proxy): its quotes turn `stale` at once, never served as live, and
  are live again after the snapshot when the broker comes back;
- kill -9 of the active gateway: the standby takes over, a write sent during the failover runs once, and
  the replica's quotes are live again from the new gateway.

``TICKGATE_CLUSTER_ROUNDS`` (``make cluster``) repeats the fault rounds with more clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import time
import uuid
from pathlib import Path

import httpx
import websockets

from proxies import Proxy
from tickgate.instruments import InstrumentRegistry
from tickgate.sim import DEFAULT_CLIENT_ID
from waiting import until

from .cluster import Gateway, Host, Replica, add_user, split_env, start_simulator

TTL = 2.0
ROUNDS = int(os.environ.get("TICKGATE_CLUSTER_ROUNDS", "1"))
CLIENTS = 3 if ROUNDS == 1 else 20


class Watcher:
    """A push client that takes everything and records when quotes came and whether it was closed."""

    def __init__(self, url: str, key: str, items: list[str]) -> None:
        self.url = url.replace("http://", "ws://") + f"/api/v2/stream?key={key}"
        self.items = items
        self.arrivals: list[float] = []
        self.closed: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await until(lambda: len(self.arrivals) >= 3 or self.closed is not None, 20, "first quotes pushed")
        assert self.closed is None, self.closed

    async def _run(self) -> None:
        try:
            async with websockets.connect(self.url, max_size=None) as ws:
                await ws.send(json.dumps({"subscribe": self.items}))
                async for raw in ws:
                    if json.loads(raw).get("type") == "quotes":
                        self.arrivals.append(time.monotonic())
        except Exception as exc:
            self.closed = f"{type(exc).__name__}: {exc}"
        else:
            self.closed = "closed by the server"

    def longest_gap(self, since: float) -> float:
        times = [since] + [t for t in self.arrivals if t >= since] + [time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def never_reading_client(address: str, port: int, key: str, items: list[str]) -> socket.socket:
    """A push client that subscribes and then never reads: a small receive buffer, a handshake by hand,
    one masked frame, and silence."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (address, port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /api/v2/stream?key={key} HTTP/1.1\r\nHost: {address}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    payload = json.dumps({"subscribe": items}).encode()
    mask = os.urandom(4)
    assert len(payload) < 65536
    header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
    await loop.sock_sendall(sock, header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition (labels ignored)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_gateway_standby_and_two_replicas_through_every_fault(
    master: Path, registry: InstrumentRegistry, tmp_path: Path, schema: str
) -> None:
    sim = await start_simulator(registry, master, 4_000.0)
    env = split_env(sim, master, tmp_path, schema, TTL)
    # Each replica on a host of its own (a network namespace) where this machine allows it; else both here,
    # the second one's broker connection through a relay the test can cut.
    hosts = [Host("r1"), Host("r2")] if Host.available() else []
    for host in hosts:
        await host.create()
    proxy = hosts[1].broker if hosts else Proxy()
    if not hosts:
        await proxy.start()
    gateways = [Gateway(name, {**env, "TICKGATE_DATA_DIR": str(tmp_path / name)}) for name in ("g1", "g2")]
    replica_env = {"api__push_send_timeout_s": "1"}
    r1 = Replica(
        "r1", {**env, "TICKGATE_DATA_DIR": str(tmp_path / "r1")}, hosts[0] if hosts else None, **replica_env
    )
    r2_env = {**env, "TICKGATE_DATA_DIR": str(tmp_path / "r2")}
    if not hosts:
        r2_env["TICKGATE_BUS_URL"] = f"nats://127.0.0.1:{proxy.port}"
    r2 = Replica("r2", r2_env, hosts[1] if hosts else None, **replica_env)
    print(f"replicas on {'hosts of their own: ' + ', '.join(h.ns for h in hosts) if hosts else 'this host'}")
    peak = 0
    watching = True

    async def watch_sockets() -> None:  # every few milliseconds: never two gateways' sockets at once
        nonlocal peak
        while watching:
            peak = max(peak, len(sim.open_sockets(DEFAULT_CLIENT_ID)))
            await asyncio.sleep(0.003)

    socket_watch = asyncio.create_task(watch_sockets())
    watchers: list[Watcher] = []
    try:
        await gateways[0].start()
        await until(lambda: gateways[0].said("GATEWAY ACTIVE"), 60, f"g1 active: {gateways[0].lines[-5:]}")
        await gateways[1].start()
        key = await add_user(env, "desk")
        await asyncio.gather(r1.start(), r2.start())
        await asyncio.gather(r1.ready(), r2.ready())
        await until(lambda: gateways[1].said("GATEWAY WAITING"), 60, "g2 waiting")
        h = {"X-API-Key": key}
        async with httpx.AsyncClient(timeout=30) as http:
            # A write through r1, once; its retry with the same key gets the first answer.
            add = {"symbol": "INFY", "strikes": 9}
            first = await http.post(
                f"{r1.url}/api/v2/watchlist", json=add, headers={**h, "Idempotency-Key": "k1"}
            )
            assert first.status_code == 200, first.text
            again = await http.post(
                f"{r1.url}/api/v2/watchlist", json=add, headers={**h, "Idempotency-Key": "k1"}
            )
            assert again.json() == first.json(), "a retry with the same key must get the first answer"
            other = await http.post(f"{r2.url}/api/v2/watchlist", json=add, headers=h)
            assert other.json()["status"] == "touched", other.text  # a new key: a second add, no new chain
            entry = first.json()["entry"]
            chain_keys = first.json()["keys"]

            async def placed_on(replica: Replica) -> bool:
                listed = (await http.get(f"{replica.url}/api/v2/watchlist", headers=h)).json()["entries"]
                return len(listed) == 1 and listed[0]["id"] == entry["id"] and listed[0]["placed"]

            for replica in (r1, r2):
                deadline = time.monotonic() + 10
                while not await placed_on(replica):
                    assert time.monotonic() < deadline, f"{replica.name} never saw the chain placed"
                    await asyncio.sleep(0.2)
            status = await http.get(f"{r2.url}/api/v2/subscriptions", headers=h)  # forwarded to the gateway
            assert status.status_code == 200, status.text
            assert status.json()["groups"], status.text
            unknown = await http.get(f"{r1.url}/api/v2/option-chain/NOSUCHSYMBOL", headers=h)
            assert unknown.status_code == 404, unknown.text
            assert "NOSUCHSYMBOL" in unknown.text, "the 404 names what was not found"
            page = await http.get(f"{r2.url}/")  # the dashboard, served by the replica
            assert page.status_code == 200
            assert "app.js" in page.text
            assert (await http.get(f"{r2.url}/app.js")).status_code == 200
            chain = await http.get(
                f"{r2.url}/api/v2/option-chain/INFY",
                params={"expiry": entry["expiry"], "strikes": 9, "analytics": "true"},
                headers=h,
            )
            assert chain.status_code == 200, chain.text
            assert chain.json()["watchlist_id"] == entry["id"], "the replica knows the chain is watched"

            async def sources(replica: Replica) -> set[str]:
                got = await http.get(
                    f"{replica.url}/api/v2/quotes", params={"keys": ",".join(chain_keys)}, headers=h
                )
                assert got.status_code == 200, got.text
                return {q["source"] for q in got.json()["quotes"]}

            for replica in (r1, r2):
                deadline = time.monotonic() + 15
                while await sources(replica) != {"feed"}:
                    assert time.monotonic() < deadline, f"{replica.name}: {await sources(replica)}"
                    await asyncio.sleep(0.2)

            for rnd in range(ROUNDS):
                # Push clients on both replicas, on the chain.
                on_r1 = [Watcher(r1.url, key, [entry["stream_id"]]) for _ in range(CLIENTS)]
                on_r2 = [Watcher(r2.url, key, [entry["stream_id"]]) for _ in range(CLIENTS)]
                watchers += on_r1 + on_r2
                await asyncio.gather(*(w.start() for w in on_r1 + on_r2))

                # A slow client on r2 is dropped; r2's other clients are not slowed.
                streamed = sorted({str(k) for s in sim.live() for k in s.book.subscriptions})
                slow_items = [entry["stream_id"], *streamed[:2000]]
                before = metric((await http.get(f"{r2.url}/metrics")).text, "tickgate_push_dropped")
                slow_since = time.monotonic()
                slow = await never_reading_client(r2.address, r2.port, key, slow_items)
                deadline = time.monotonic() + 60
                while metric((await http.get(f"{r2.url}/metrics")).text, "tickgate_push_dropped") <= before:
                    assert time.monotonic() < deadline, "the slow client was never dropped"
                    await asyncio.sleep(0.2)
                slow.close()
                for w in on_r2:
                    assert w.closed is None, w.closed
                    assert w.longest_gap(slow_since) < 1.0, "a slow client slowed the others"

                # kill -9 of r1: r2's clients are not disturbed.
                killed = time.monotonic()
                await r1.kill()
                await asyncio.sleep(2.0)
                for w in on_r2:
                    assert w.closed is None, w.closed
                    assert w.longest_gap(killed) < 1.0, f"r2's client paused {w.longest_gap(killed):.2f} s"
                assert all(w.closed is not None for w in on_r1), "r1's clients should have been cut"
                await r1.start()  # a new replica in its place (stateless: it rebuilds from the broker)
                await r1.ready()

                # The broker cut at r2: stale at once, never live while cut; live again after the snapshot.
                await proxy.cut()
                deadline = time.monotonic() + 3
                while "feed" in await sources(r2):
                    assert time.monotonic() < deadline, "a quote was served as live with the broker cut"
                    await asyncio.sleep(0.05)
                for _ in range(10):
                    assert "feed" not in await sources(r2), "a quote served as live while the broker is cut"
                    await asyncio.sleep(0.1)
                await proxy.restore()
                deadline = time.monotonic() + 15
                while await sources(r2) != {"feed"}:
                    assert time.monotonic() < deadline, "r2 did not catch up after the broker came back"
                    await asyncio.sleep(0.2)
                for w in watchers:
                    await w.stop()

                # kill -9 of the active gateway: a write sent meanwhile runs once; quotes live again.
                active = next(
                    g for g in gateways if g.proc and g.proc.returncode is None and g.said("GATEWAY ACTIVE")
                )
                standby = next(g for g in gateways if g is not active)
                if standby.proc is None or standby.proc.returncode is not None:
                    standby.lines.clear()
                    await standby.start()
                    await until(lambda g=standby: g.said("GATEWAY WAITING"), 60, "standby waiting")
                standby.lines.clear()
                snapshots = {
                    r.name: metric((await http.get(f"{r.url}/metrics")).text, "tickgate_replica_snapshots")
                    for r in (r1, r2)
                }
                killed = time.monotonic()
                await active.kill()
                add2 = {"symbol": "TCS", "strikes": 5}
                k2 = {**h, "Idempotency-Key": f"failover-{rnd}-{uuid.uuid4().hex[:6]}"}
                during = await http.post(f"{r2.url}/api/v2/watchlist", json=add2, headers=k2)
                assert during.status_code == 200, during.text
                assert standby.said("GATEWAY ACTIVE"), "answered by whom?"
                repeat = await http.post(f"{r1.url}/api/v2/watchlist", json=add2, headers=k2)
                assert repeat.json() == during.json()
                deadline = time.monotonic() + 20
                for r in (r1, r2):  # from the new gateway: a snapshot taken from it, and its quotes live
                    while metric(
                        (await http.get(f"{r.url}/metrics")).text, "tickgate_replica_snapshots"
                    ) <= snapshots[r.name] or await sources(r) != {"feed"}:
                        assert time.monotonic() < deadline, f"{r.name}: no snapshot from the new gateway"
                        await asyncio.sleep(0.2)
                print(
                    f"round {rnd}: gateway killed → replicas live again in {time.monotonic() - killed:.2f} s"
                )
                active.lines.clear()
                await active.start()  # back as the standby
                await until(lambda g=active: g.said("GATEWAY WAITING"), 60, "the old gateway waits")
                listed = (await http.get(f"{r2.url}/api/v2/watchlist", headers=h)).json()["entries"]
                assert sorted(e["symbol"] for e in listed) == ["INFY", "TCS"], listed
                await http.delete(f"{r1.url}/api/v2/watchlist/{during.json()['entry']['id']}", headers=h)
    finally:
        watching = False
        await socket_watch
        for w in watchers:
            await w.stop()
        for proc in (r1, r2, *gateways):
            with contextlib.suppress(Exception):
                await proc.terminate()
        await proxy.cut()
        for host in hosts:
            await host.destroy()
        await sim.close()
    assert peak <= 5, f"the client id held {peak} sockets at once"
    assert not sim.breaches, sim.breaches[:3]
