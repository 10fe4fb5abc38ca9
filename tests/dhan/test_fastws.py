"""The feed's fast frame path: cuts exactly what websockets' own parser would, at any chunking."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

import pinned
from simulator.helpers import FAST
from tickgate.dhan.fastws import MAX_FAST_FRAME, FeedConnection, split_frames
from tickgate.dhan.protocol import Disconnect, FeedMode, Quote, decode_frame, subscribe_messages
from tickgate.sim import Simulator, StaticUniverse

frames = st.one_of(
    st.binary(max_size=300).map(lambda p: Frame(Opcode.BINARY, p)),
    st.binary(min_size=126, max_size=70_000).map(lambda p: Frame(Opcode.BINARY, p)),
    st.binary(max_size=40).map(lambda p: Frame(Opcode.PING, p)),
    st.binary(max_size=40).map(lambda p: Frame(Opcode.PONG, p)),
    st.text(max_size=50).map(lambda t: Frame(Opcode.TEXT, t.encode())),
    st.binary(max_size=50).map(lambda p: Frame(Opcode.BINARY, p, fin=False)),
    st.binary(max_size=50).map(lambda p: Frame(Opcode.CONT, p)),
    st.just(Frame(Opcode.CLOSE, b"\x03\xe8bye")),
)


def serialize(frame: Frame) -> bytes:
    return frame.serialize(mask=False)


@given(st.lists(frames, max_size=30), st.lists(st.integers(1, 5000), max_size=40))
def test_any_chunking_yields_every_frame_in_order(sequence: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(serialize(f) for f in sequence)
    pending = bytearray()
    fast: list[bytes] = []
    others: list[bytes] = []
    pos = 0
    for size in [*cuts, len(stream)]:
        pending += stream[pos : pos + size]
        pos += size
        payloads, rest, consumed, give_up = split_frames(bytes(pending) if size % 2 else pending)
        assert not give_up
        del pending[:consumed]
        fast += [bytes(p) for p in payloads]
        others += rest
    assert not pending
    assert fast == [f.data for f in sequence if f.opcode is Opcode.BINARY and f.fin]
    assert others == [serialize(f) for f in sequence if not (f.opcode is Opcode.BINARY and f.fin)]


def test_masked_or_oversized_frames_are_left_to_websockets() -> None:
    good = serialize(Frame(Opcode.BINARY, b"\x02abc"))
    masked = Frame(Opcode.BINARY, b"xyz").serialize(mask=True)
    payloads, others, consumed, give_up = split_frames(good + masked + good)
    assert payloads == [b"\x02abc"]
    assert others == []
    assert consumed == len(good)
    assert give_up
    huge = bytes([0x82, 127]) + (MAX_FAST_FRAME + 1).to_bytes(8, "big")
    assert split_frames(huge) == ([], [], 0, True)
    assert split_frames(bytes([0x82, 126, 0x01])) == ([], [], 0, False)  # length not complete yet


async def test_a_live_feed_takes_the_fast_path_and_websockets_keeps_the_connection() -> None:
    """Over a real socket: packets arrive through ``on_frames`` (none through websockets' reader), the
    simulator's pings are answered by websockets (the socket outlives several ping timeouts), and a server
    disconnect still ends ``recv`` with ConnectionClosed."""
    universe = StaticUniverse.sample(pinned.TODAY)
    async with Simulator(universe=universe, rate=3_000, **FAST) as sim:  # type: ignore[arg-type]
        ws = await connect(sim.feed_url(), create_connection=FeedConnection, max_size=None, compression=None)
        assert isinstance(ws, FeedConnection)
        got: list[bytes] = []
        ws.on_frames = got.extend
        for message in subscribe_messages(FeedMode.QUOTE, universe.keys()[:50]):
            await ws.send(message)
        reader = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(FAST["ping_interval"] * 3 + FAST["ping_timeout"])
        assert ws.fast_frames == len(got) > 50
        assert any(isinstance(p, Quote) for f in got for p in decode_frame(f))
        assert not reader.done()  # nothing went the slow way, and the connection is alive
        sim.faults.disconnect(code=805)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(reader, 10)
        assert any(isinstance(p, Disconnect) and p.reason_code == 805 for f in got for p in decode_frame(f))


def test_the_private_websockets_api_the_fast_path_reads_is_still_there() -> None:
    """``FeedConnection`` reads ``protocol.reader.buffer`` (websockets' private stream reader) to start the
    fast path only at a frame boundary. websockets may change it in any release: this fails loudly on a
    version where it did, and pyproject pins the range (``websockets>=13,<16``) that was checked."""
    from importlib.metadata import version

    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    major = int(version("websockets").split(".")[0])
    assert 13 <= major < 16, (
        f"websockets {version('websockets')} is outside the range the fast path was checked on"
    )
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"))
    reader = protocol.reader
    assert isinstance(reader.buffer, bytearray)
    assert len(reader.buffer) == 0  # empty at a frame boundary: the fast path may take over
    reader.feed_data(b"\x82")  # half a frame header: the general parser holds it
    assert len(reader.buffer) == 1, "protocol.reader.buffer no longer holds what the general parser has read"
