"""Decoder benchmark: official SDK parser vs tickgate per-frame vs tickgate batch, on the same bytes.

A mixed stream like the live feed (60% full, 30% quote, 10% ticker / OI / prev-close), one packet per frame,
plus a stacked variant (several packets per frame, as the depth feed does). Run: ``python bench/decode.py``.
Targets (issue 2): batch >= 20x the SDK and >= 2M packets/s; per-frame >= 3x the SDK.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from dhanhq.marketfeed import MarketFeed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, best_of, machine, print_table, save_results
from tickgate.dhan.batch import decode_batch
from tickgate.dhan.protocol import ExchangeSegment, ResponseCode, decode_frame, empty_packets

MIX = {  # share of packets per response code
    ResponseCode.FULL: 0.60,
    ResponseCode.QUOTE: 0.30,
    ResponseCode.TICKER: 0.05,
    ResponseCode.OI: 0.03,
    ResponseCode.PREV_CLOSE: 0.02,
}


def make_frames(count: int, seed: int = 7) -> list[bytes]:
    """``count`` realistic packets, one per frame, in random interleaving."""
    rng = np.random.default_rng(seed)
    frames: list[bytes] = []
    for code, share in MIX.items():
        n = int(count * share)
        packets = empty_packets(code, n)
        packets["segment"] = rng.choice([int(ExchangeSegment.NSE_FNO), int(ExchangeSegment.BSE_FNO)], n)
        packets["security_id"] = rng.integers(35000, 90000, n)
        for name in packets.dtype.names or ():
            kind = packets.dtype[name].kind
            if name in ("code", "length", "segment", "security_id") or packets.dtype[name].subdtype:
                continue
            packets[name] = rng.uniform(10, 30000, n) if kind == "f" else rng.integers(0, 60000, n)
        if code == ResponseCode.FULL:
            depth = packets["depth"]
            for level_field in ("bid_price", "ask_price"):
                depth[level_field] = rng.uniform(10, 30000, (n, 5))
            for level_field in ("bid_qty", "ask_qty", "bid_orders", "ask_orders"):
                depth[level_field] = rng.integers(0, 5000, (n, 5))
        raw = packets.tobytes()
        size = packets.dtype.itemsize
        frames.extend(raw[i : i + size] for i in range(0, len(raw), size))
    order = rng.permutation(len(frames))
    return [frames[i] for i in order]


def stack(frames: list[bytes], per_frame: int) -> list[bytes]:
    return [b"".join(frames[i : i + per_frame]) for i in range(0, len(frames), per_frame)]


def sdk_parser() -> object:
    return object.__new__(MarketFeed)  # parser methods only; no event loop, no socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096, help="frames handed to decode_batch at once")
    parser.add_argument("--stack", type=int, default=8, help="packets per frame in the stacked variant")
    args = parser.parse_args()

    frames = make_frames(args.packets)
    packets = len(frames)
    stacked = stack(frames, args.stack)
    feed = sdk_parser()
    sdk_process = feed.process_data  # type: ignore[attr-defined]

    def run_sdk() -> None:
        for frame in frames:
            sdk_process(frame)

    def run_per_frame(source: list[bytes]) -> None:
        for frame in source:
            decode_frame(frame)

    def run_batch(source: list[bytes]) -> None:
        size = args.batch
        for start in range(0, len(source), size):
            decode_batch(source[start : start + size])

    # Check that every path decodes every packet before timing it.
    assert sum(len(decode_frame(f)) for f in stacked) == packets
    assert (
        sum(len(decode_batch(stacked[i : i + args.batch])) for i in range(0, len(stacked), args.batch))
        == packets
    )

    sdk_t = best_of(run_sdk, repeat=1)
    rows = [("official dhanhq 2.3.0 parser (1 packet/frame)", sdk_t, None)]
    rows.append(("tickgate decode_frame (1 packet/frame)", best_of(lambda: run_per_frame(frames)), 3.0))
    rows.append(
        (
            f"tickgate decode_batch (1 packet/frame, {args.batch} frames/batch)",
            best_of(lambda: run_batch(frames)),
            20.0,
        )
    )
    rows.append(
        (f"tickgate decode_frame (stacked {args.stack}/frame)", best_of(lambda: run_per_frame(stacked)), None)
    )
    rows.append(
        (f"tickgate decode_batch (stacked {args.stack}/frame)", best_of(lambda: run_batch(stacked)), None)
    )

    table = []
    for name, seconds, target in rows:
        rate = packets / seconds
        speedup = sdk_t / seconds
        verdict = "" if target is None else ("met" if speedup >= target else "MISSED")
        table.append(
            (
                name,
                f"{rate / 1e6:.2f} M/s",
                f"{speedup:.1f}x",
                "" if target is None else f">= {target:.0f}x",
                verdict,
            )
        )
    batch_rate = packets / rows[2][1]
    table.append(
        (
            "batch absolute target",
            f"{batch_rate / 1e6:.2f} M/s",
            "",
            ">= 2.00 M/s",
            "met" if batch_rate >= 2e6 else "MISSED",
        )
    )
    print_table(
        f"Decode: {packets:,} packets (60% full, 30% quote, 10% ticker/OI/prev-close) — {machine()}",
        ["path", "packets/s", "vs SDK", "target", ""],
        table,
    )
    sdk = f"SDK parser {packets / sdk_t / 1e6:.2f} M packets/s"
    batch_x, frame_x = sdk_t / rows[2][1], sdk_t / rows[1][1]
    save_results(
        "decode",
        [
            Figure(
                "batch decoder (1 packet/frame) vs official SDK parser",
                f"{batch_rate / 1e6:.2f} M packets/s = {batch_x:.1f}× the SDK",
                "≥ 20× and ≥ 2 M/s",
                batch_x >= 20 and batch_rate >= 2e6,
                sdk,
            ),
            Figure(
                "per-frame decoder vs official SDK parser",
                f"{packets / rows[1][1] / 1e6:.2f} M packets/s = {frame_x:.1f}× the SDK",
                "≥ 3×",
                frame_x >= 3,
                sdk,
            ),
        ],
    )


if __name__ == "__main__":
    main()
