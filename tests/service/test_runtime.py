"""RuntimePolicy: survivors of a full collection are frozen, a frozen cycle dropped later is reclaimed by the
end-of-day collection, and uninstalling puts the process back as it was."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from tickgate.service.runtime import RuntimePolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def policy() -> Iterator[RuntimePolicy]:
    before = sys.getswitchinterval()
    p = RuntimePolicy()
    p.install()
    try:
        yield p
    finally:
        p.uninstall()
        assert sys.getswitchinterval() == before
        assert gc.get_freeze_count() == 0


def test_install_shortens_the_gil_switch_interval(policy: RuntimePolicy) -> None:
    assert sys.getswitchinterval() == pytest.approx(RuntimePolicy.SWITCH_INTERVAL_S)


def test_survivors_of_a_full_collection_are_frozen(policy: RuntimePolicy) -> None:
    survivors = [Node() for _ in range(1000)]  # tracked, alive
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    gc.collect()  # a full collection: the callback freezes what is left
    assert gc.get_freeze_count() >= len(survivors)
    assert policy.stats.full_collections >= 1
    assert policy.stats.last_full_ms >= 0.0


def test_a_frozen_cycle_is_reclaimed_only_by_collect_all(policy: RuntimePolicy) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect()  # the cycle is alive: it survives and is frozen
    del a, b
    gc.collect()  # a full collection does not walk frozen objects
    assert gone() is not None
    freed = policy.collect_all()
    assert gone() is None
    assert freed >= 2
    assert policy.stats.daily_collections == 1


def test_uninstall_stops_freezing() -> None:
    p = RuntimePolicy()
    p.install()
    assert gc.get_freeze_count() > 0
    p.uninstall()
    assert gc.get_freeze_count() == 0
    keep = [Node() for _ in range(10)]
    gc.collect()
    assert gc.get_freeze_count() == 0
    assert keep
