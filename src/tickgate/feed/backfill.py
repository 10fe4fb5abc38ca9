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
  must wait (a chain added before its underlying's first tick) from the next request, ahead of the queue:
  callers at the same moment share that request, so a burst of adds costs one request a second.

A price from the feed is never overwritten (:meth:`tickgate.feed.quotes.QuoteStore.fill`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import msgspec

from tickgate.config import FeedLimits
from tickgate.dhan.client import Credentials, CredentialsProvider
from tickgate.dhan.protocol import ExchangeSegment, InstrumentKey
from tickgate.feed.quotes import QuoteStore, RestQuote

log = logging.getLogger(__name__)

PRIORITY_USER, PRIORITY_TIER_B, PRIORITY_OTHER = 0, 1, 2
QUOTE_PATH = "/v2/marketfeed/quote"
FILL_SLICE = 100  # quotes decoded, built and stored between two turns of the event loop
TAKE_SLICE = 250  # keys taken from the queue between two turns of the event loop


class BackfillQueue:
    """Keys wanted, by priority then first arrival; each key at most once until :meth:`new_day`.

    A heap with lazy deletion, so taking a request's worth costs in proportion to the request, not to a
    start-up's 25,000 waiting keys (this runs on the event loop)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, InstrumentKey]] = []  # (priority, arrival, key); stale entries too
        self._queued: dict[InstrumentKey, tuple[int, int]] = {}  # key -> its live (priority, arrival)
        self._arrivals = itertools.count()
        self._done: set[InstrumentKey] = set()
        self._cohort: set[InstrumentKey] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def want(self, keys: Iterable[InstrumentKey], priority: int) -> int:
        """Queue ``keys`` (a key already queued keeps the better priority, and its place of arrival);
        returns how many are new."""
        added = 0
        queued, done, heap = self._queued, self._done, self._heap
        for key in keys:
            if key in done:
                continue
            old = queued.get(key)
            if old is None:
                added += 1
                entry = (priority, next(self._arrivals))
            elif priority < old[0]:
                entry = (priority, old[1])
            else:
                continue
            queued[key] = entry
            heapq.heappush(heap, (*entry, key))
        return added

    def take(self, n: int) -> list[InstrumentKey]:
        """Up to ``n`` keys, best priority first (arrival order within one), removed from the queue."""
        keys: list[InstrumentKey] = []
        queued, heap = self._queued, self._heap
        while heap and len(keys) < n:
            priority, arrival, key = heapq.heappop(heap)
            if queued.get(key) == (priority, arrival):  # else stale: taken already, or moved up
                del queued[key]
                keys.append(key)
        return keys

    def done(self, keys: Iterable[InstrumentKey]) -> None:
        keys = list(keys)
        self._done.update(keys)
        self._cohort.difference_update(keys)

    def retry(self, keys: Iterable[InstrumentKey], priority: int = PRIORITY_USER) -> None:
        """A request that failed: its keys go back, ahead of what waited behind them."""
        self.want(keys, priority)

    def mark_cohort(self) -> int:
        """Remember what is queued now (a start-up's whole plan); :attr:`cohort_left` counts down as it is
        answered. Returns its size."""
        self._cohort = set(self._queued)
        return len(self._cohort)

    @property
    def cohort_left(self) -> int:
        return len(self._cohort)

    def new_day(self) -> None:
        """A new trading day: every key may be filled again."""
        self._done.clear()


def request_body(keys: Sequence[InstrumentKey]) -> dict[str, list[int]]:
    body: dict[str, list[int]] = {}
    for key in keys:
        body.setdefault(ExchangeSegment(key.segment).name, []).append(key.security_id)
    return body


class _Quote(msgspec.Struct):
    """The fields of one instrument's market quote that backfill keeps. Typed loosely (a malformed value
    loses that value, not the answer); the rest of Dhan's answer (depth, circuit limits) is skipped by the
    decoder without building it."""

    last_price: Any = None
    ohlc: Any = None
    average_price: Any = None
    volume: Any = None
    oi: Any = None
    last_quantity: Any = None


class _Answer(msgspec.Struct):
    data: dict[str, dict[str, msgspec.Raw]] | None = None


_DECODER = msgspec.json.Decoder(_Answer)
_QUOTE_DECODER = msgspec.json.Decoder(_Quote)


def parse_quotes(content: bytes) -> list[RestQuote]:
    """Dhan's ``/marketfeed/quote`` (or ``/ohlc``, ``/ltp``) answer → one :class:`RestQuote` per instrument.
    During the day ``ohlc.close`` is the previous close; an instrument Dhan leaves out is simply absent."""
    return list(iter_quotes(content))


def iter_quotes(content: bytes) -> Iterator[RestQuote]:
    """:func:`parse_quotes`, lazily, so that the event loop can take the quotes a slice at a time: the
    answer's outline is read at the first step (each quote left as raw bytes), and each quote is decoded and
    built as it is taken.

    Decoded by ``msgspec`` into the few fields kept: a 1,000-quote answer is most of a megabyte, with five
    levels of depth a side, and building all of it as Python objects held the interpreter (and so the feed)
    for many times as long; decoding it whole in one step held it for a millisecond or more."""
    try:
        data = _DECODER.decode(content).data
    except msgspec.DecodeError as exc:  # a malformed answer fails its request (retried), not the backfill
        raise ValueError(f"market quote answer malformed: {exc}") from None
    if data is None:
        raise ValueError("market quote answer without a data object")
    for segment_name, by_id in data.items():
        segment = ExchangeSegment.from_name(segment_name)
        for sid, raw in by_id.items():
            try:
                q = _QUOTE_DECODER.decode(raw)
            except msgspec.DecodeError as exc:
                raise ValueError(f"market quote answer malformed at {segment_name} {sid}: {exc}") from None
            ohlc = q.ohlc if isinstance(q.ohlc, Mapping) else {}
            yield RestQuote(
                key=InstrumentKey(segment, int(sid)),
                ltp=_number(q.last_price),
                prev_close=_number(ohlc.get("close")),
                open=_number(ohlc.get("open")),
                high=_number(ohlc.get("high")),
                low=_number(ohlc.get("low")),
                atp=_number(q.average_price),
                volume=_integer(q.volume),
                oi=_integer(q.oi),
                ltq=_integer(q.last_quantity),
            )


def _number(value: Any) -> float | None:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


def _integer(value: Any) -> int | None:
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None
    )


_LAST_ANSWER: dict[str, float] = {}
"""REST base URL → when (monotonic) this process last had an answer from it, whichever backfiller asked."""


class BackfillStats:
    """Counters for ``/admin/stats`` (``wanted``: keys queued, each at most once a day; ``priced``: legs the
    REST answer priced, the feed not having done it first)."""

    def __init__(self) -> None:
        self.wanted = self.requests = self.instruments = self.priced = self.rate_limited = self.failures = 0
        self.last_error: str | None = None
        self.last_fill_s = 0.0  # when the queue last emptied after work, since the backfiller started
        self.request_ms_last = self.request_ms_max = 0.0  # sending to answer, which paces the next request
        self.startup_wanted = 0  # the plan queued at start ...
        self.startup_left = 0  # ... how much of it is still unanswered ...
        self.startup_filled_s: float | None = None  # ... and when the last of it was answered, since start

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


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
        speed: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._store = store
        self._per_request = limits.quote_instruments_per_request
        # Counted from each answer (see _request), so two requests never land within one interval at Dhan.
        # The limit is per market second: a virtual clock ``speed`` times faster than real time (a simulated
        # day; never against Dhan, where only the system clock is allowed) fits ``speed`` times more.
        self._interval = 1.0 / (limits.quote_requests_per_second * speed)
        self._timeout = timeout_s
        self._transport = transport
        self.queue = BackfillQueue()
        self.stats = BackfillStats()
        self._wake = asyncio.Event()
        self._next_at = 0.0  # monotonic: the earliest the next request may start
        self._urgent: dict[InstrumentKey, list[asyncio.Future[RestQuote | None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._started = 0.0

    @property
    def pending(self) -> int:
        return len(self.queue)

    def want(self, keys: Iterable[InstrumentKey], priority: int = PRIORITY_OTHER) -> None:
        added = self.queue.want(keys, priority)
        if added:
            self.stats.wanted += added
            self._wake.set()

    def start(self) -> None:
        if self._task is not None:
            return
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self._timeout, transport=self._transport
        )
        self._started = time.monotonic()
        # A restart must not race its predecessor's last request (same account, same second: a 429). A new
        # process takes longer than an interval to come this far; a restart inside this process (tests, an
        # embedding application) waits out the last answer its predecessor had.
        self._next_at = _LAST_ANSWER.get(self.base_url, -math.inf) + self._interval
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tickgate-backfill")

    def mark_startup(self) -> None:
        """What is queued now is the start-up's plan: ``/admin/stats`` says when the last of it was answered
        (``startup_filled_s``, seconds since :meth:`start`)."""
        self.stats.startup_wanted = self.stats.startup_left = self.queue.mark_cohort()
        self.stats.startup_filled_s = None

    def _count_startup(self) -> None:
        left = self.queue.cohort_left
        if self.stats.startup_filled_s is None and self.stats.startup_wanted and not left:
            self.stats.startup_filled_s = round(time.monotonic() - self._started, 3)
        self.stats.startup_left = left

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._answer(self._urgent, [])  # whoever still waits for a quote goes on without, now
        self._urgent.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def quote_now(self, keys: Sequence[InstrumentKey], timeout: float | None = None) -> list[RestQuote]:
        """The quotes of ``keys`` from the next request, ahead of the queue (a chain added before its
        underlying's first tick). Callers at the same time share that request: many adds at once cost one
        request a second, not one each. Empty when it fails or takes longer than ``timeout`` (default: two
        intervals); the caller goes on without."""
        if self._task is None:
            return []
        loop = asyncio.get_running_loop()
        waiters = []
        for key in keys:
            future: asyncio.Future[RestQuote | None] = loop.create_future()
            self._urgent.setdefault(key, []).append(future)
            waiters.append(future)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout if timeout is not None else self._interval * 2 + 1.0):
                answers = await asyncio.gather(*waiters)
        except TimeoutError:
            return []
        return [q for q in answers if q is not None]

    async def _run(self) -> None:
        """At each slot: the urgent keys, then the best of the queue, in one request; the answer folded
        into the store and handed to whoever waits for it. Forever: a failure is logged, counted and
        retried with backoff (the loop never dies)."""
        backoff = self._interval
        while True:
            if not len(self.queue) and not self._urgent:
                if self.stats.requests:
                    self.stats.last_fill_s = time.monotonic() - self._started
                self._wake.clear()
                await self._wake.wait()
                continue
            # Wait for the next slot *before* taking keys: a request a second is all Dhan allows, so what
            # arrives meanwhile (a chain being added, the rest of a start-up's plan) rides in the same one.
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            urgent = list(self._urgent)[: self._per_request]
            waiting = {key: self._urgent.pop(key) for key in urgent}
            keys = list(urgent)
            try:
                await self._take_into(keys, waiting)
                if not keys:
                    continue
                quotes = await self._request(keys)
            except asyncio.CancelledError:  # stopped: what was taken waits in the queue for a restart
                self.queue.retry([k for k in keys if k not in waiting])
                self._answer(waiting, [])
                raise
            except RateLimitedError:
                self.queue.retry(keys)
                self._answer(waiting, [])
                await asyncio.sleep(self._interval)  # honour the 429: a whole extra interval
            except Exception as exc:
                self.queue.retry(keys)
                self._answer(waiting, [])
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                self.queue.done(keys)
                self._count_startup()
                self._answer(waiting, quotes)
                backoff = self._interval

    async def _take_into(self, keys: list[InstrumentKey], waiting: Mapping[InstrumentKey, object]) -> None:
        """Fill ``keys`` up to a request's worth from the queue, a slice at a time with the loop free between
        (a heap of a start-up's 25,000 keys gives up a thousand in about a millisecond)."""
        while len(keys) < self._per_request:
            taken = self.queue.take(min(TAKE_SLICE, self._per_request - len(keys)))
            if not taken:
                return
            keys += [k for k in taken if k not in waiting]
            await asyncio.sleep(0)

    @staticmethod
    def _answer(
        waiting: dict[InstrumentKey, list[asyncio.Future[RestQuote | None]]], quotes: Sequence[RestQuote]
    ) -> None:
        by_key = {q.key: q for q in quotes}
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(by_key.get(key))

    async def _request(self, keys: list[InstrumentKey]) -> list[RestQuote]:
        assert self._client is not None
        creds: Credentials = await _resolve(self._credentials)
        self.stats.requests += 1
        self.stats.instruments += len(keys)
        sent = time.monotonic()
        self._next_at = sent + self._interval  # should the request fail before an answer
        response = await self._client.post(
            QUOTE_PATH,
            json=request_body(keys),
            headers={"access-token": creds.access_token, "client-id": creds.client_id},
        )
        # Dhan counted this request somewhere between its sending and its answer: counting the interval
        # from the answer keeps the next one an interval after it there, whatever delayed the sending.
        answered = time.monotonic()
        self._next_at = answered + self._interval
        _LAST_ANSWER[self.base_url] = answered
        self.stats.request_ms_last = round((answered - sent) * 1000, 1)
        self.stats.request_ms_max = max(self.stats.request_ms_max, self.stats.request_ms_last)
        if response.status_code == 429:
            self.stats.rate_limited += 1
            self._next_at = time.monotonic() + self._interval * 2
            raise RateLimitedError("market quote answered 429")
        if response.status_code != 200:
            raise BackfillError(f"market quote answered {response.status_code}: {_error_text(response)}")
        # 1,000 quotes: outlined at once, then decoded, built and stored a slice at a time with the loop free
        # between slices (and after the answer's last read), so the feed, pushes and the API wait at most one
        # slice. (A thread would hold the interpreter for whole switch intervals instead.)
        await asyncio.sleep(0)
        quotes: list[RestQuote] = []
        taking = iter_quotes(response.content)
        while chunk := list(itertools.islice(taking, FILL_SLICE)):
            quotes += chunk
            self.stats.priced += self._store.fill(chunk, time.monotonic_ns())
            await asyncio.sleep(0)
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
