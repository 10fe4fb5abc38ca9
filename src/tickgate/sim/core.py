"""What Dhan's feed server holds and the rules it enforces, as pure state: no sockets, no event loop.

The simulator's server shell feeds every request through these, and the planner's stateful test checks the
planner's actions against the same book, so "what Dhan would hold" is written once:

* :class:`SocketBook`: one socket's ``{instrument: mode}`` and what a subscribe or unsubscribe message does to
  it (Dhan's limits: at most ``instruments_per_message`` a message, ``instruments_per_socket`` a socket);
* :func:`sockets_to_evict`: the ``sockets_per_account`` rule (past it, the *oldest* sockets get 805);
* :class:`TokenBook`: which access tokens are valid for which client id, and the Disconnect code a connect
  with the others gets (808 malformed, 807 expired, 809 unknown, 810 another client's).

Behaviour where Dhan documents nothing is decided in :mod:`tickgate.sim.server`'s docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tickgate.config import FeedLimits
from tickgate.dhan.protocol import FeedMode, InstrumentKey

BreachKind = Literal["sockets_per_account", "instruments_per_message", "instruments_per_socket"]


@dataclass(frozen=True, slots=True)
class Applied:
    """What one subscribe or unsubscribe message did to a socket's book."""

    subscribe: bool
    mode: FeedMode
    size: int  # instruments on the socket afterwards
    changed: tuple[tuple[InstrumentKey, FeedMode | None], ...] = ()  # subscribed in ``mode`` (previous mode)
    removed: tuple[tuple[InstrumentKey, FeedMode], ...] = ()  # unsubscribed (the mode they had)
    mismatches: int = 0  # unsubscribed in another mode than they had (removed all the same)
    breach: BreachKind | None = None  # over a limit: Dhan answers Disconnect 804

    @property
    def new(self) -> list[InstrumentKey]:
        """Instruments new to the socket (they get a PrevClose packet)."""
        return [k for k, old in self.changed if old is None]


@dataclass(slots=True)
class SocketBook:
    """One socket's subscriptions as Dhan's server holds them."""

    limits: FeedLimits
    subscriptions: dict[InstrumentKey, FeedMode] = field(default_factory=dict)
    max_size: int = 0

    def __len__(self) -> int:
        return len(self.subscriptions)

    def apply(
        self, subscribe: bool, mode: FeedMode, keys: Sequence[InstrumentKey], *, sent: int | None = None
    ) -> Applied:
        """One request of ``keys`` (the instruments the master knows, in message order; ``sent``: how many
        the message listed, unknown ones included, default ``len(keys)``).

        A message over the per-message limit is refused whole (``breach``, nothing applied). A subscribe
        that takes the socket over its limit is applied and flagged: Dhan disconnects the socket, which then
        holds nothing. Re-subscribing changes an instrument's mode; an unsubscribe removes it whatever mode
        it had (a different mode is counted in ``mismatches``)."""
        limit = self.limits.instruments_per_message
        if (len(keys) if sent is None else sent) > limit:
            return Applied(subscribe, mode, len(self.subscriptions), breach="instruments_per_message")
        subs = self.subscriptions
        if subscribe:
            changed = []
            for key in keys:
                old = subs.get(key)
                if old is not mode:
                    changed.append((key, old))
                subs[key] = mode
            size = len(subs)
            self.max_size = max(self.max_size, size)
            over = size > self.limits.instruments_per_socket
            breach: BreachKind | None = "instruments_per_socket" if over else None
            return Applied(True, mode, size, changed=tuple(changed), breach=breach)
        removed = []
        mismatches = 0
        for key in keys:
            old = subs.pop(key, None)
            if old is not None:
                removed.append((key, old))
                mismatches += old is not mode
        return Applied(False, mode, len(subs), removed=tuple(removed), mismatches=mismatches)

    def clear(self) -> int:
        """The socket closed: the server forgets everything on it. Returns how many it held."""
        n = len(self.subscriptions)
        self.subscriptions.clear()  # in place: a socket's record shares this dict
        return n


def sockets_to_evict(open_before: int, limits: FeedLimits) -> int:
    """A client id already holds ``open_before`` sockets and opens one more: how many of its oldest Dhan
    closes (805) to stay within ``sockets_per_account``."""
    return max(0, open_before + 1 - limits.sockets_per_account)


@dataclass(slots=True)
class TokenBook:
    """Access tokens by client id: valid ones (each with its expiry on the market clock, or none), and
    expired ones (which get 807 rather than 809); and each client id's PIN and TOTP secret, for headless
    generation."""

    valid: dict[str, str] = field(default_factory=dict)  # token → client id
    expired: dict[str, str] = field(default_factory=dict)  # token → client id
    expires_at: dict[str, float] = field(default_factory=dict)  # token → when it expires (absent: never)
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)  # client id → (PIN, TOTP secret)

    def all_tokens(self) -> set[str]:
        """Every token this book ever issued or was given, valid or not (what a log must never show)."""
        return set(self.valid) | set(self.expired)

    @classmethod
    def of(cls, credentials: Mapping[str, str]) -> TokenBook:
        """From ``{client id: token}``."""
        return cls({token: cid for cid, token in credentials.items()})

    def check(self, params: Mapping[str, str]) -> tuple[str, str, int | None]:
        """(client id, token, Disconnect reason or None) for a connect URL's query parameters."""
        token, client_id = params.get("token", ""), params.get("clientId", "")
        if params.get("version") != "2" or params.get("authType") != "2" or not token:
            return client_id, token, 808
        return client_id, token, self.verify(token, client_id)

    def verify(self, token: str, client_id: str) -> int | None:
        """None when ``token`` is valid for ``client_id``; else Dhan's reason (807 expired, 809 unknown,
        810 another client's)."""
        if token in self.expired:
            return 807
        owner = self.valid.get(token)
        if owner is None:
            return 809
        if client_id != owner:
            return 810
        return None

    def expire(self, client_id: str | None = None) -> list[str]:
        """Expire the valid tokens (of ``client_id``, default all); returns them."""
        gone = [t for t, cid in self.valid.items() if client_id is None or cid == client_id]
        for token in gone:
            self.expired[token] = self.valid.pop(token)
            self.expires_at.pop(token, None)
        return gone

    def due(self, now: float) -> list[str]:
        """Expire the tokens whose lifetime has run out at ``now`` (market clock); returns them."""
        gone = [t for t, at in self.expires_at.items() if at <= now]
        for token in gone:
            del self.expires_at[token]
            if token in self.valid:
                self.expired[token] = self.valid.pop(token)
        return gone

    def issue(self, token: str, client_id: str, expires_at: float | None = None) -> None:
        """A new valid token for ``client_id`` (earlier ones stay valid until they expire)."""
        if not token:
            raise ValueError("token must not be empty")
        self.expired.pop(token, None)
        self.valid[token] = client_id
        if expires_at is None:
            self.expires_at.pop(token, None)
        else:
            self.expires_at[token] = expires_at

    def client_ids(self) -> list[str]:
        return sorted(set(self.valid.values()) | set(self.expired.values()))

    def first(self, default_client: str) -> tuple[str, str]:
        """(token, client id) of the first valid credentials, for building a connect URL."""
        return next(iter(self.valid.items()), ("", default_client))
