"""The suite's pinned clock (imported first by ``tests/conftest.py``, so before any ``Settings()``).

The whole suite runs on a virtual clock (speed 1) that starts at a fixed instant, whatever day the machine
thinks it is. Every ``Settings()`` built in a test, every simulator and every service subprocess reads it;
the anchor travels in the environment, so processes agree to the microsecond. Run the suite on another day
with ``TICKGATE_CLOCK_START=2026-12-06T11:00:00+05:30 make test``; ``tests/test_date_matrix.py`` walks the
dates that matter in one run.
"""

from __future__ import annotations

import datetime as dt
import os
import time

from tickgate.clock import IST, ManualClock, VirtualClock

DEFAULT_CLOCK_START = "2026-11-25T10:00:00+05:30"  # a Wednesday, mid-session, no expiry that week's day

os.environ["TICKGATE_CLOCK_START"] = os.environ.get("TICKGATE_CLOCK_START") or DEFAULT_CLOCK_START
os.environ.setdefault("TICKGATE_CLOCK_SPEED", "1")
os.environ.setdefault("TICKGATE_CLOCK_ANCHOR", repr(time.time()))  # real-time: the virtual clock's anchor

CLOCK_START = dt.datetime.fromisoformat(os.environ["TICKGATE_CLOCK_START"]).astimezone(IST)
TODAY = CLOCK_START.date()


def flowing(at: dt.datetime) -> VirtualClock:
    """A clock that reads ``at`` now and runs at real speed (a service's day goes on during the test)."""
    return VirtualClock(at, 1.0)


def frozen(at: dt.datetime) -> ManualClock:
    """A clock that stands at ``at`` until the test moves it."""
    return ManualClock(at)
