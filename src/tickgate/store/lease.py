"""Who may hold the Dhan sockets: one gateway at a time, by a lease row in PostgreSQL (issue 20).

Why a lease row and not an advisory lock: an advisory lock dies with its session, and a session dies
when the database notices its client is gone, which for a partitioned client can take minutes (TCP
keepalives): meanwhile a standby would wait, or, if the lock were taken on another path, two gateways
would both stream. A row with an expiry on **the database's clock** makes the rule explicit:

* the holder takes or renews the row (``expires_at = now() + ttl``) every ``ttl / 5``;
* a holder that has not renewed for ``step_down × ttl`` on **its own** monotonic clock closes its Dhan
  sockets and steps down, before the row can expire (``step_down`` < 1: 0.6 by default);
* a standby takes the row only once ``expires_at < now()``, and every takeover increments ``epoch``, the
  fencing token: a holder's renewal names its epoch, so a holder that was replaced cannot renew.

So two gateways never hold sockets for one account at once, even when the holder is cut off from the
database, as long as the two clocks' rates differ by less than ``1 - step_down``. :class:`LeaseTimer` is
that rule with no I/O (the tests drive it on a manual clock); :class:`LeaseKeeper` is the shell that runs
it against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


@dataclass
class LeaseTimer:
    """When to renew and when to step down, on the holder's monotonic clock (pure)."""

    ttl_s: float
    step_down: float = 0.6
    epoch: int | None = None
    last_ok: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.step_down < 1:
            raise ValueError("step_down must be between 0 and 1: the holder stops before the row expires")

    @property
    def holding(self) -> bool:
        return self.epoch is not None

    def acquired(self, epoch: int, now: float) -> None:
        self.epoch, self.last_ok = epoch, now

    def renewed(self, now: float) -> None:
        self.last_ok = now

    def lost(self) -> None:
        self.epoch = None

    def renew_at(self) -> float:
        return self.last_ok + self.ttl_s / 5

    def must_step_down(self, now: float) -> bool:
        """Not renewed for ``step_down × ttl``: stop using the sockets now (the row may soon expire)."""
        return self.holding and now - self.last_ok >= self.step_down * self.ttl_s


_TAKE = sa.text(
    """
    INSERT INTO gateway_lease (name, holder, epoch, expires_at)
    VALUES (:name, :holder, 1, now() + make_interval(secs => :ttl))
    ON CONFLICT (name) DO UPDATE
       SET holder = EXCLUDED.holder,
           epoch = gateway_lease.epoch + 1,
           expires_at = EXCLUDED.expires_at
     WHERE gateway_lease.expires_at < now()
    RETURNING epoch
    """
)
_RENEW = sa.text(
    """
    UPDATE gateway_lease SET expires_at = now() + make_interval(secs => :ttl)
     WHERE name = :name AND holder = :holder AND epoch = :epoch
    RETURNING epoch
    """
)
_RELEASE = sa.text(
    "UPDATE gateway_lease SET expires_at = now() WHERE name = :name AND holder = :holder AND epoch = :epoch"
)


class LeaseKeeper:
    """Takes the lease when it is free, keeps it, and gives it up in time (see the module docstring).

    ``on_acquired(epoch)`` starts the gateway's work (connect to Dhan); ``on_lost()`` stops it and must
    return only once the sockets are closed. Both run on the keeper's task, one at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        holder: str,
        *,
        name: str = "gateway",
        ttl_s: float = 5.0,
        step_down: float = 0.6,
        on_acquired: Callable[[int], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("the gateway's lease needs PostgreSQL (TICKGATE_DB_URL=postgresql://…)")
        self._engine = engine
        self.holder = holder
        self.name = name
        self.timer = LeaseTimer(ttl_s, step_down)
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._monotonic = monotonic
        self.takeovers = 0
        self.step_downs = 0
        self.failures = 0
        self._started_at = 0.0  # when the query in flight was sent (monotonic)
        self._task: asyncio.Task[None] | None = None

    @property
    def epoch(self) -> int | None:
        return self.timer.epoch

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-lease")

    async def stop(self, *, release: bool = True) -> None:
        """Stop keeping the lease; a graceful stop releases it, so the standby need not wait out the ttl."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.timer.holding:
            await self._on_lost()
            if release:
                with contextlib.suppress(Exception):
                    async with self._engine.begin() as conn:
                        await conn.execute(_RELEASE, self._params())
            self.timer.lost()

    def _params(self) -> dict[str, object]:
        return {"name": self.name, "holder": self.holder, "epoch": self.timer.epoch, "ttl": self.timer.ttl_s}

    async def _run(self) -> None:
        """Forever: try to take the lease; while held, renew it, and step down in time if renewals fail.

        The database work runs as a task of its own that the loop never waits on past its deadline: a
        query on a connection cut off mid-way can hang (and so can its cancellation, which tries to roll
        back over the same dead connection), and the step-down must not wait for it."""
        timer = self.timer
        tick = timer.ttl_s / 20
        pending: asyncio.Task[int | None] | None = None
        while True:
            now = self._monotonic()
            if pending is not None and pending.done():
                await self._settle(pending)
                pending = None
            if timer.must_step_down(self._monotonic()):
                if pending is not None:
                    pending.cancel()  # abandoned: its clean-up may hang on the dead connection
                    pending = None
                await self._step_down("not renewed in time")
            elif pending is None and (not timer.holding or now >= timer.renew_at()):
                sql = _RENEW if timer.holding else _TAKE
                self._started_at = now
                pending = asyncio.get_running_loop().create_task(self._query(sql))
            elif pending is not None and not timer.holding and now - self._started_at > timer.ttl_s:
                pending.cancel()  # a take that hangs: try again afresh
                pending = None
            await asyncio.sleep(tick)

    async def _query(self, sql: sa.TextClause) -> int | None:
        async with self._engine.begin() as conn:
            value = (await conn.execute(sql, self._params())).scalar()
        return None if value is None else int(value)

    async def _settle(self, done: asyncio.Task[int | None]) -> None:
        """Act on a finished take or renewal."""
        timer = self.timer
        try:
            value = done.result()
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the database is away: counted, logged, retried
            self.failures += 1
            log.warning("gateway lease: %s: %s", type(exc).__name__, exc)
            return
        if not timer.holding:
            if value is not None:
                timer.acquired(value, self._monotonic())
                self.takeovers += 1
                log.warning("gateway lease taken by %s (epoch %d)", self.holder, value)
                await self._on_acquired(value)
        elif value is None:  # replaced: another gateway holds a newer epoch
            await self._step_down("the lease was taken over")
        else:
            timer.renewed(self._started_at)  # counted from when the renewal was sent, not answered

    async def _step_down(self, why: str) -> None:
        self.step_downs += 1
        log.error(
            "gateway %s steps down (epoch %s): %s; closing the Dhan sockets", self.holder, self.epoch, why
        )
        try:
            await self._on_lost()
        finally:
            self.timer.lost()
