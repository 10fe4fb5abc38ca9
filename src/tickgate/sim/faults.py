"""Faults on request: what a real network and a real Dhan do to a client, one method each.

Every fault is recorded (:attr:`Faults.log`, the control API's ``faults``) with its time on the one clock,
so a test can line up what it injected with what the client did.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal, Protocol

import numpy as np

from tickgate.clock import Clock
from tickgate.sim.connection import SimSocket
from tickgate.sim.core import TokenBook
from tickgate.sim.emitter import CorruptMode, Emitter, ws_frame

Selector = int | str | Iterable[int] | None
RefuseMode = Literal["503", "close", "429"]


class FaultTarget(Protocol):
    """What faults act on: the server's live sockets and the ways it ends one."""

    client_id: str
    clock: Clock
    rng: np.random.Generator
    emitter: Emitter
    tokens: TokenBook

    def live(self, client_id: str | None = None) -> list[SimSocket]: ...

    def mark_closing(self, sock: SimSocket, reason: str, code: int | None = None) -> bool: ...

    def kick(self, sock: SimSocket, code: int) -> None: ...


class Faults:
    """``sim.faults``: drop, disconnect, corrupt, stall, silence, resume, refuse, tokens, raw frames."""

    def __init__(self, server: FaultTarget, history_limit: int) -> None:
        self._server = server
        self.log: deque[dict[str, Any]] = deque(maxlen=history_limit)
        self.refuse_until = 0.0  # monotonic
        self.refuse_mode: RefuseMode = "503"
        self.blocked_clients: dict[str, float] = {}  # client id -> monotonic end of its own 429 block
        self.master_failures = 0  # the next this many /master.csv requests answer 503

    def _record(self, kind: str, sockets: list[int] | None = None, **params: Any) -> None:
        entry: dict[str, Any] = {"at": self._server.clock.timestamp(), "kind": kind, **params}
        if sockets is not None:
            entry["sockets"] = sockets
        self.log.append(entry)

    def select(self, selector: Selector, client_id: str | None = None) -> list[SimSocket]:
        """The live sockets a selector names: an id, a list of ids, ``all``, ``oldest``, ``newest`` or
        ``random``; any of the words after a client id and a slash (``1100000022/random``) picks among that
        account's sockets only, so every fault can target one account of several."""
        if isinstance(selector, str) and "/" in selector:
            client, _, rest = selector.partition("/")
            return self.select(rest or "all", client)
        live = self._server.live(client_id)
        if selector is None or selector == "all":
            return live
        if isinstance(selector, int):
            return [s for s in live if s.record.id == selector]
        if isinstance(selector, str):
            if selector.isdigit():
                return [s for s in live if s.record.id == int(selector)]
            if selector == "oldest":
                return live[:1]
            if selector == "newest":
                return live[-1:]
            if selector == "random":
                return [live[int(self._server.rng.integers(len(live)))]] if live else []
            raise ValueError(
                f"socket selector must be an id, all, oldest, newest or random; got {selector!r}"
            )
        wanted = set(selector)
        return [s for s in live if s.record.id in wanted]

    def drop(self, selector: Selector = None) -> list[int]:
        """Abort the TCP connection of the selected sockets: no Disconnect packet, no close frame."""
        chosen = self.select(selector)
        for sock in chosen:
            self._server.mark_closing(sock, "dropped")
            sock.ws.transport.abort()
        ids = [s.record.id for s in chosen]
        self._record("drop", ids)
        return ids

    def disconnect(self, selector: Selector = None, code: int = 800) -> list[int]:
        """Send Disconnect(``code``: 805, 807, 800 …) to the selected sockets, then close them."""
        chosen = self.select(selector)
        for sock in chosen:
            self._server.kick(sock, code)
        ids = [s.record.id for s in chosen]
        self._record("disconnect", ids, code=code)
        return ids

    def corrupt(self, pct: float, mode: CorruptMode = "mixed") -> None:
        """Corrupt ``pct`` % of market-data frames from now on (:meth:`Emitter.set_corruption`)."""
        self._server.emitter.set_corruption(pct, mode)
        self._record("corrupt", pct=pct, mode=mode)

    def stall(self, selector: Selector = None, seconds: float | None = None) -> list[int]:
        """Stop sending data to the selected sockets (pings and pongs continue) for ``seconds`` or until
        :meth:`resume`."""
        return self._suspend("stall", selector, seconds)

    def silence(self, selector: Selector = None, seconds: float | None = None) -> list[int]:
        """Make the selected sockets go dead: no data, no pings, no pongs (incoming frames are still read and
        requests still recorded). The client must notice by itself."""
        return self._suspend("silence", selector, seconds)

    def _suspend(self, kind: str, selector: Selector, seconds: float | None) -> list[int]:
        chosen = self.select(selector)
        loop = asyncio.get_running_loop()
        for sock in chosen:
            if kind == "stall":
                sock.record.stalled = True
            else:
                sock.record.silent = True
                sock.ws.silent = True
            old = sock.timers.pop(kind, None)
            if old is not None:
                old.cancel()
            if seconds is not None:
                sock.timers[kind] = loop.call_later(seconds, self._resume_one, sock, kind)
        ids = [s.record.id for s in chosen]
        self._record(kind, ids, seconds=seconds)
        return ids

    def resume(self, selector: Selector = None) -> list[int]:
        """End stalls and silences of the selected sockets."""
        chosen = self.select(selector)
        for sock in chosen:
            for kind in ("stall", "silence"):
                self._resume_one(sock, kind)
        ids = [s.record.id for s in chosen]
        self._record("resume", ids)
        return ids

    def _resume_one(self, sock: SimSocket, kind: str) -> None:
        handle = sock.timers.pop(kind, None)
        if handle is not None:
            handle.cancel()
        if kind == "stall":
            sock.record.stalled = False
        elif sock.record.silent:
            sock.record.silent = False
            sock.ws.silent = False
            sock.last_pong = asyncio.get_running_loop().time()  # it was us who did not ping

    def refuse(self, seconds: float, mode: RefuseMode = "503") -> None:
        """Refuse new feed connections for ``seconds``: HTTP 503 (``"503"``), an immediate TCP abort
        (``"close"``), or Dhan's HTTP 429 of a blocked account or lapsed data plan (``"429"``, see
        :meth:`block`). Control and master requests are still answered. 0 lifts it."""
        if mode not in ("503", "close", "429"):
            raise ValueError(f"refuse mode must be 503, close or 429, got {mode!r}")
        self.refuse_until = time.monotonic() + max(seconds, 0.0)
        self.refuse_mode = mode
        self._record("refuse", seconds=seconds, mode=mode)

    def fail_master(self, requests: int) -> None:
        """The next ``requests`` downloads of ``/master.csv`` answer HTTP 503 (a morning when Dhan's file
        server is down); counted by requests, not time, so that a client's retries meet it however fast
        its clock runs."""
        self.master_failures = max(0, requests)
        self._record("fail_master", requests=requests)

    def block(self, seconds: float, client_id: str | None = None) -> None:
        """The account is blocked for ``seconds``: every handshake answers HTTP 429 (sockets already open
        carry on). With ``client_id``, only that account's handshakes (the others' connect as usual)."""
        if client_id is None:
            self.refuse(seconds, "429")
            return
        self.blocked_clients[client_id] = time.monotonic() + max(seconds, 0.0)
        self._record("block", seconds=seconds, client_id=client_id)

    def blocked(self, client_id: str | None) -> bool:
        """Is ``client_id`` blocked on its own now (see :meth:`block`)?"""
        until = self.blocked_clients.get(client_id or "")
        return until is not None and time.monotonic() < until

    @property
    def refusing_for(self) -> float:
        """Seconds left of an injected refusal of new connections (0 when accepting)."""
        return max(0.0, self.refuse_until - time.monotonic())

    def expire_token(self, client_id: str | None = None) -> list[int]:
        """Expire the valid tokens (of ``client_id``, default all): their sockets get Disconnect 807 and
        new connections with them are answered 807 until :meth:`set_token` issues a new one."""
        tokens = self._server.tokens
        tokens.expire(client_id)
        chosen = [s for s in self._server.live() if s.token in tokens.expired]
        for sock in chosen:
            self._server.kick(sock, 807)
        ids = [s.record.id for s in chosen]
        self._record("expire_token", ids, client_id=client_id)
        return ids

    def set_token(self, token: str, client_id: str | None = None) -> None:
        """Issue a new valid access token (daily rollover). Earlier tokens stay valid until expired."""
        owner = client_id or self._server.client_id
        self._server.tokens.issue(token, owner)
        self._record("set_token", client_id=owner)

    def inject(self, selector: Selector, payload: bytes) -> list[int]:
        """Send raw bytes as one binary frame (heartbeats, unknown codes, hand-made corrupt packets)."""
        chosen = [s for s in self.select(selector) if s.writable]
        frame = ws_frame(payload)
        for sock in chosen:
            sock.ws.transport.write(frame)
            sock.record.frames_sent += 1
            sock.record.bytes_sent += len(frame)
        ids = [s.record.id for s in chosen]
        self._record("inject", ids, bytes=len(payload))
        return ids
