"""A TCP proxy to a local service that a test can cut, partition and restore (the broker, the database)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """A TCP proxy to ``upstream`` (NATS by default) the test can cut (connections reset, new ones refused)
    and restore, or partition (``partitioned = True``: nothing passes either way, nothing is closed, as
    when a network drops packets)."""

    def __init__(self, upstream: int = 4222, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host  # where it listens: another network namespace reaches it on a veth's address
        self.partitioned = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open: list[asyncio.StreamWriter] = []

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._pipe, self.host, port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.open += [writer, up_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    while self.partitioned:  # hold everything, close nothing
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for w in self.open:
            w.close()
        self.open = []

    async def restore(self) -> None:
        await self.start(self.port)
