"""REST backfill: a price, a previous close, volume and OI for every subscribed leg before its first trade.

Far strikes may not trade for hours, and where Dhan sends PrevClose packets for indices only, a leg has no
previous close until it trades. Dhan's REST market quote (``POST /v2/marketfeed/quote``) answers up to
``quote_instruments_per_request`` instruments a request, ``quote_requests_per_second`` requests a second:
25,000 instruments in 25 requests. This fills the quote store from it, off the feed's path:

* :class:`BackfillQueue` (pure) orders what is wanted: users' chains first, then Tier B, then the rest, each
  key once a day (a leg that never trades still has its snapshot);
* :class:`Backfiller` (the shell) sends one request at a time, never more often than the limit allows,
  honours a 429 by waiting a whole extra interval, retries failures with backoff, and never blocks the feed
  or the API: it is one task with its own HTTP client. :meth:`Backfiller.quote_now` answers a caller that
  must wait (a chain added before its underlying's first tick) ahead of the queue, within the same pacing.

A price from the feed is never overwritten (:meth:`tickgate.feed.quotes.QuoteStore.fill`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from tickgate.config import FeedLimits
from tickgate.dhan.client import Credentials, CredentialsProvider
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.feed.quotes import QuoteStore, RestQuote

log = logging.getLogger(__name__)

PRIORITY_USER, PRIORITY_TIER_B, PRIORITY_OTHER = 0, 1, 2
QUOTE_PATH = "/v2/marketfeed/quote"


class BackfillQueue:
    """Keys wanted, by priority then arrival; each key at most once until :meth:`new_day`."""

    def __init__(self) -> None:
        self._pending: dict[InstrumentKey, int] = {}
        self._done: set[InstrumentKey] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def want(self, keys: Iterable[InstrumentKey], priority: int) -> int:
        """Queue ``keys`` (a key already queued keeps the better priority); returns how many are new."""
        added = 0
        pending = self._pending
        for key in keys:
            if key in self._done:
                continue
            old = pending.get(key)
            if old is None:
                added += 1
                pending[key] = priority
            elif priority < old:
                pending[key] = priority
        return added

    def take(self, n: int) -> list[InstrumentKey]:
        """Up to ``n`` keys, best priority first (arrival order within one), removed from the queue."""
        if not self._pending:
            return []
        best = sorted(self._pending.items(), key=lambda kv: kv[1])[:n]  # stable: arrival order kept
        keys = [k for k, _ in best]
        for key in keys:
            del self._pending[key]
        return keys

    def done(self, keys: Iterable[InstrumentKey]) -> None:
        self._done.update(keys)

    def retry(self, keys: Iterable[InstrumentKey], priority: int = PRIORITY_USER) -> None:
        """A request that failed: its keys go back, ahead of what waited behind them."""
        for key in keys:
            self._pending.setdefault(key, priority)

    def new_day(self) -> None:
        """A new trading day: every key may be filled again."""
        self._done.clear()


def request_body(keys: Sequence[InstrumentKey]) -> dict[str, list[int]]:
    body: dict[str, list[int]] = {}
    for key in keys:
        body.setdefault(ExchangeSegment(key.segment).name, []).append(key.security_id)
    return body


def parse_quotes(answer: Mapping[str, Any]) -> list[RestQuote]:
    """Dhan's ``/marketfeed/quote`` (or ``/ohlc``, ``/ltp``) answer → one :class:`RestQuote` per instrument.
    During the day ``ohlc.close`` is the previous close; an instrument Dhan leaves out is simply absent."""
    out: list[RestQuote] = []
    data = answer.get("data") or {}
    if not isinstance(data, Mapping):
        raise ValueError("market quote answer without a data object")
    for segment_name, by_id in data.items():
        segment = ExchangeSegment.from_name(segment_name)
        if not isinstance(by_id, Mapping):
            continue
        for sid, q in by_id.items():
            if not isinstance(q, Mapping):
                continue
            ohlc = q.get("ohlc") or {}
            out.append(
                RestQuote(
                    key=InstrumentKey(segment, int(sid)),
                    ltp=_number(q.get("last_price")),
                    prev_close=_number(ohlc.get("close")),
                    open=_number(ohlc.get("open")),
                    high=_number(ohlc.get("high")),
                    low=_number(ohlc.get("low")),
                    atp=_number(q.get("average_price")),
                    volume=_integer(q.get("volume")),
                    oi=_integer(q.get("oi")),
                    ltq=_integer(q.get("last_quantity")),
                )
            )
    return out


def _number(value: Any) -> float | None:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


def _integer(value: Any) -> int | None:
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None
    )


@dataclass(slots=True)
class BackfillStats:
    requests: int = 0
    instruments: int = 0
    priced: int = 0
    rate_limited: int = 0
    failures: int = 0
    last_error: str | None = None
    last_fill_s: float = 0.0  # when the queue last emptied after work, since the backfiller started

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Backfiller:
    """The REST shell around :class:`BackfillQueue` (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        credentials: CredentialsProvider,
        store: QuoteStore,
        limits: FeedLimits,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._store = store
        self._per_request = limits.quote_instruments_per_request
        # A hair over the limit's interval: two requests must never land in one of Dhan's seconds.
        self._interval = 1.0 / limits.quote_requests_per_second * 1.02
        self._timeout = timeout_s
        self._transport = transport
        self.queue = BackfillQueue()
        self.stats = BackfillStats()
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()  # one request at a time, queue or quote_now
        self._next_at = 0.0  # monotonic: the earliest the next request may start
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._started = 0.0

    @property
    def pending(self) -> int:
        return len(self.queue)

    def want(self, keys: Iterable[InstrumentKey], priority: int = PRIORITY_OTHER) -> None:
        if self.queue.want(keys, priority):
            self._wake.set()

    def start(self) -> None:
        if self._task is not None:
            return
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self._timeout, transport=self._transport
        )
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tickgate-backfill")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def quote_now(self, keys: Sequence[InstrumentKey]) -> list[RestQuote]:
        """One request for ``keys`` now (at most one interval's wait), ahead of the queue: their quotes,
        folded into the store too. Empty when the request fails (the caller goes on without)."""
        keys = list(keys)[: self._per_request]
        if not keys or self._client is None:
            return []
        try:
            return await self._request(keys)
        except Exception as exc:  # the caller carries on without a snapshot; the failure is counted
            self._failed(exc)
            return []

    async def _run(self) -> None:
        """Take the best keys, ask for them, fold the answer in; forever (a failure is logged, counted and
        retried with backoff: the loop never dies)."""
        backoff = self._interval
        while True:
            keys = self.queue.take(self._per_request)
            if not keys:
                if self.stats.requests:
                    self.stats.last_fill_s = time.monotonic() - self._started
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._request(keys)
            except RateLimitedError:
                self.queue.retry(keys)
                await asyncio.sleep(self._interval)  # honour the 429: a whole extra interval
            except Exception as exc:
                self.queue.retry(keys)
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                self.queue.done(keys)
                backoff = self._interval

    async def _request(self, keys: list[InstrumentKey]) -> list[RestQuote]:
        assert self._client is not None
        async with self._turn:
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_at = time.monotonic() + self._interval
            creds: Credentials = await _resolve(self._credentials)
            self.stats.requests += 1
            self.stats.instruments += len(keys)
            response = await self._client.post(
                QUOTE_PATH,
                json=request_body(keys),
                headers={"access-token": creds.access_token, "client-id": creds.client_id},
            )
        if response.status_code == 429:
            self.stats.rate_limited += 1
            self._next_at = time.monotonic() + self._interval * 2
            raise RateLimitedError("market quote answered 429")
        if response.status_code != 200:
            raise BackfillError(f"market quote answered {response.status_code}: {_error_text(response)}")
        quotes = parse_quotes(response.json())
        self.stats.priced += self._store.fill(quotes, time.monotonic_ns())
        return quotes

    def _failed(self, exc: BaseException) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("REST backfill request failed: %s", self.stats.last_error)


class BackfillError(Exception):
    """The market quote refused a request (the error names Dhan's code, never the token)."""


class RateLimitedError(BackfillError):
    pass


async def _resolve(provider: CredentialsProvider) -> Credentials:
    value = provider()
    if isinstance(value, Credentials):
        return value
    return await value


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, Mapping):
        return f"{body.get('errorCode', '')} {body.get('errorMessage', '')}".strip()[:200]
    return str(body)[:200]
