"""A small HTTP/1.1 server shell (h11 over asyncio streams) for the simulator's REST side.

The feed port is websockets', which parses only GET requests; Dhan's market quote is POST. This shell reads
a request with :mod:`h11` (sans-I/O, like the rest of the simulator), hands method, path, headers and body
to a handler, and writes its answer. Keep-alive is honoured, so a client's connection pool is exercised as
against Dhan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import h11

from tickgate.sim.rest import Answer, dhan_error

log = logging.getLogger(__name__)

Handler = Callable[[str, str, dict[str, str], bytes], Answer]
MAX_BODY = 1 << 20


class HttpShell:
    """``await HttpShell(handler).start(host, port)``; :attr:`port` once started."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h11.ProtocolError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        return
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
            assert request is not None
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            target = request.target.decode("latin-1")  # path and query: the handler splits what it needs
            try:
                answer = self._handler(request.method.decode("ascii"), target, headers, bytes(body))
            except Exception:  # a bug answers 500 and is logged; the server goes on
                log.exception("simulator REST handler failed")
                answer = dhan_error(500, "Other", "DH-908", "internal error")
            payload = answer.json()
            reply = h11.Response(
                status_code=answer.status,
                headers=[("content-type", "application/json"), ("content-length", str(len(payload)))],
            )
            writer.write(conn.send(reply) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
