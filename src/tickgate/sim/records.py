"""What the simulator saw, kept as plain records: per socket, per limit breach, and server-wide counters.

Tests and the control API read these; they outlive the sockets they describe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tickgate.dhan.protocol import FeedMode, InstrumentKey
from tickgate.sim.core import BreachKind


def keys_json(subscriptions: Mapping[InstrumentKey, FeedMode]) -> dict[str, str]:
    return {str(key): mode.name for key, mode in subscriptions.items()}


@dataclass(slots=True)
class SocketRecord:
    """Everything the simulator saw on one WebSocket, kept after it closes (minus the subscription map)."""

    id: int
    client_id: str
    remote: str
    opened_at: float
    authenticated: bool = False
    closed_at: float | None = None
    close_reason: str | None = None  # auth:809, disconnect:805, dropped, keepalive_timeout, client_request …
    disconnect_code: int | None = None  # reason code of the Disconnect packet the server sent, if any
    close_code: int | None = None  # WebSocket close code once closed (1006: no close frame)
    subscriptions: dict[InstrumentKey, FeedMode] = field(default_factory=dict)
    final_subscriptions: int = 0
    max_subscriptions: int = 0
    messages: int = 0
    subscribe_messages: int = 0
    unsubscribe_messages: int = 0
    instruments_received: int = 0
    max_message_instruments: int = 0
    unknown_instruments: int = 0
    mode_mismatches: int = 0
    malformed: int = 0
    last_error: str | None = None
    packets_sent: Counter[int] = field(default_factory=Counter)
    frames_sent: int = 0
    bytes_sent: int = 0
    corrupt_frames: int = 0
    backpressure_skips: int = 0
    packets_withheld: int = 0  # owed by the rate but not sent: stalled, silent or backpressured
    pings_sent: int = 0
    pongs_received: int = 0
    stalled: bool = False
    silent: bool = False

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def to_json(self, *, subscriptions: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("subscriptions", "packets_sent")
        }
        out["open"] = self.open
        out["subscription_count"] = len(self.subscriptions)
        out["packets_sent"] = {str(code): n for code, n in sorted(self.packets_sent.items())}
        if subscriptions:
            out["subscriptions"] = keys_json(self.subscriptions)
        return out


@dataclass(frozen=True, slots=True)
class Breach:
    """A client went over one of Dhan's limits (the chaos suite requires none)."""

    kind: BreachKind
    at: float
    client_id: str
    socket_id: int
    value: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at,
            "client_id": self.client_id,
            "socket_id": self.socket_id,
            "value": self.value,
            "limit": self.limit,
        }


@dataclass(slots=True)
class SimulatorStats:
    """Server-wide counters."""

    connections: int = 0
    auth_failures: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    malformed: int = 0
    unknown_instruments: int = 0
    mode_mismatches: int = 0
    packets_sent: Counter[int] = field(default_factory=Counter)
    frames_sent: int = 0
    bytes_sent: int = 0
    corrupt_frames: int = 0
    backpressure_skips: int = 0
    packets_withheld: int = 0
    packets_quiet: int = 0  # draws that did not trade: a closed segment, or a thin strike
    goodbyes: int = 0  # disconnect requests (code 12) received
    master_served: int = 0  # /master.csv downloads answered
    master_failed: int = 0  # ... and refused by the fail_master fault
    max_sockets_with_foreign: int = 0  # the client's and other programs' sockets at once (Dhan then drops)
    foreign_805s: int = 0  # the client's sockets dropped by another program's socket opening
    foreign_dropped: int = 0  # another program's sockets dropped by the client's opening
    snapshots_after_hours: int = 0  # instruments answered with a snapshot on subscribe, out of session
    ticks: int = 0
    max_tick_lag_s: float = 0.0  # worst lateness of the batch timer since start: event-loop stalls
    recent_tick_lag_s: float = 0.0  # the same over the last full second
    emit_errors: int = 0
    busy_s: float = 0.0
    emit_rate_pps: float = 0.0  # market packets per second over the last second
    max_sockets_per_client: dict[str, int] = field(default_factory=dict)
    max_instruments_per_socket: int = 0
    max_instruments_per_message: int = 0

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["auth_failures"] = {str(k): v for k, v in sorted(self.auth_failures.items())}
        out["packets_sent"] = {str(k): v for k, v in sorted(self.packets_sent.items())}
        out["max_sockets_per_client"] = dict(self.max_sockets_per_client)
        return out


# ------------------------------------------------------------------------------------------------- framing
