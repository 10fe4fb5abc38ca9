"""Reconnect backoff and credential hygiene (pure parts of the client)."""

from __future__ import annotations

import random

import pytest

from tickgate.dhan.client import Backoff, Credentials, feed_url


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial=2.0, cap=60.0, stable=60.0, rng=random.Random(1))
    ceilings = [2, 4, 8, 16, 32, 60, 60, 60]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_jitter_differs_between_connections() -> None:
    delays = {Backoff(2.0, 60.0, 60.0, random.Random(seed)).next_delay() for seed in range(5)}
    assert len(delays) == 5


def test_backoff_resets_only_after_a_stable_period() -> None:
    backoff = Backoff(initial=1.0, cap=60.0, stable=30.0, rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(now=100.0)
    backoff.disconnected(now=110.0)  # up 10 s: flapping, keep backing off
    assert backoff.failures == 5
    backoff.connected(now=200.0)
    backoff.disconnected(now=260.0)  # up a minute: a fresh start (overnight drops never add up)
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1.0


def test_token_never_shows() -> None:
    creds = Credentials("1100001", "eyJ.secret-token/with+chars")
    assert "secret" not in repr(creds)
    assert "secret" not in str(creds)
    url = feed_url("wss://api-feed.dhan.co", creds)
    assert url.startswith("wss://api-feed.dhan.co?version=2&token=")
    assert "clientId=1100001&authType=2" in url
    assert "secret" not in creds.redact(f"failed to open {url}")
    assert creds.redact("token eyJ.secret-token/with+chars here") == "token *** here"
    assert len(creds.fingerprint) == 12
    assert creds.fingerprint != Credentials("1100001", "other").fingerprint


@pytest.mark.parametrize("base", ["ws://127.0.0.1:9000", "ws://127.0.0.1:9000/feed?x=1"])
def test_feed_url_appends_query(base: str) -> None:
    url = feed_url(base, Credentials("c", "t"))
    assert url.count("?") == 1
    assert url.endswith("version=2&token=t&clientId=c&authType=2")
