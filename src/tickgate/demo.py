"""``tickgate demo``: show what exists, on embedded defaults, without network or credentials.

It grows with the project; today it exercises the wire protocol end to end on a synthetic feed burst.
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from tickgate.config import get_settings
from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import (
    ExchangeSegment,
    FeedMode,
    InstrumentKey,
    ResponseCode,
    decode_frame,
    empty_packets,
    encode_disconnect,
    subscribe_messages,
)


def run_protocol_demo(console: Console, packets: int = 200_000) -> None:
    """Encode a burst of full/quote packets, decode it both ways, print rates and counters."""
    limits = get_settings().limits
    keys = [InstrumentKey(ExchangeSegment.NSE_FNO, 40_000 + i) for i in range(250)]
    messages = list(subscribe_messages(FeedMode.FULL, keys))
    console.print(
        f"[bold]Subscribe[/]: {len(keys)} keys → {len(messages)} messages of ≤ "
        f"{limits.instruments_per_message}; first: {messages[0][:96]}…"
    )
    rng = np.random.default_rng(0)
    frames: list[bytes] = []
    for code, share in ((ResponseCode.FULL, 0.6), (ResponseCode.QUOTE, 0.4)):
        n = int(packets * share)
        array = empty_packets(code, n)
        array["segment"] = int(ExchangeSegment.NSE_FNO)
        array["security_id"] = rng.integers(40_000, 40_250, n)
        array["ltp"] = rng.uniform(50, 500, n)
        raw, size = array.tobytes(), array.dtype.itemsize
        frames.extend(raw[i : i + size] for i in range(0, len(raw), size))
    frames.append(b"\x08\xa2\x00garbage")  # a corrupt frame is counted, never fatal
    frames.append(encode_disconnect(807))

    table = Table(title=f"Decoding {len(frames):,} frames")
    for column in ("decoder", "packets", "seconds", "packets/s"):
        table.add_column(column, justify="right")
    start = time.perf_counter()
    decoded = sum(len(decode_frame(f)) for f in frames)
    elapsed = time.perf_counter() - start
    table.add_row("per frame", f"{decoded:,}", f"{elapsed:.3f}", f"{decoded / elapsed:,.0f}")
    start = time.perf_counter()
    batches = [decode_batch(frames[i : i + 4096]) for i in range(0, len(frames), 4096)]
    elapsed = time.perf_counter() - start
    total = sum(len(b) for b in batches)
    table.add_row("batch (numpy)", f"{total:,}", f"{elapsed:.3f}", f"{total / elapsed:,.0f}")
    console.print(table)
    corrupt = sum(b.stats.corrupt_frames for b in batches)
    events = [e for b in batches for _, e in b.events]
    console.print(f"corrupt frames counted: {corrupt}; server events: {events}")


def main() -> None:
    console = Console()
    console.rule("[bold]tickgate demo (offline, embedded defaults)")
    run_protocol_demo(console)
    console.rule()
