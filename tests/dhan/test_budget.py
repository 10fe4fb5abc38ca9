"""The socket budget: repeated 805s give sockets up to another program, a quiet account probes them back."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tickgate.dhan.budget import SocketBudget


def budget(**kw: float) -> SocketBudget:
    args: dict[str, float] = {"strikes": 2, "window_s": 600, "regrow_after_s": 3_600, "regrow_max_s": 14_400}
    return SocketBudget(5, **{**args, **kw})  # type: ignore[arg-type]


def test_one_805_is_a_transient_two_give_up_every_socket_they_closed() -> None:
    b = budget()
    assert b.on_805(0, {0}, 100.0) == set()
    assert b.size == 5
    # A second program's two sockets: both of ours down on 805 go, not one.
    assert b.on_805(1, {0, 1}, 110.0) == {0, 1}
    assert (b.size, b.given_up) == (3, {0, 1})
    assert b.reason is not None
    assert "805" in b.reason


def test_805s_far_apart_are_not_an_episode() -> None:
    b = budget()
    b.on_805(0, {0}, 0.0)
    assert b.on_805(1, {1}, 601.0) == set()
    assert b.size == 5


def test_the_last_socket_is_never_given_up() -> None:
    b = budget()
    for t, sid in enumerate(range(5)):
        b.on_805(sid, set(range(sid + 1)), float(t))
    assert b.size == 1


def test_a_quiet_hour_probes_one_socket_back_and_a_lived_probe_grows() -> None:
    b = budget()
    b.on_805(0, {0}, 0.0)
    b.on_805(1, {0, 1}, 10.0)
    assert b.due(10.0 + 3_599.0) is None
    assert b.due(10.0 + 3_600.0) == 0
    assert (b.size, b.probing) == (4, 0)
    assert b.due(10.0 + 3_600.0 + 599.0) is None  # the probe has not lived its window yet
    assert b.due(10.0 + 3_600.0 + 600.0) == 1  # it lived: the next one follows after the base wait
    assert b.grows == 1


def test_a_probe_answered_with_805_goes_back_and_the_wait_doubles() -> None:
    b = budget()
    b.on_805(0, {0}, 0.0)
    b.on_805(1, {0, 1}, 0.0)
    assert b.due(3_600.0) == 0
    assert b.on_805(0, {0}, 3_601.0) == {0}  # one 805 is enough for a probe
    assert b.due(3_601.0 + 3_600.0) is None
    assert b.due(3_601.0 + 7_200.0) == 0
    # The probe crowded out another of ours (the oldest): that one goes, the probe stays.
    assert b.on_805(3, {3}, 20_000.0) == {3}
    assert b.given_up == {1, 3}


def test_the_wait_after_failed_probes_is_capped() -> None:
    b = budget()
    b.on_805(0, {0}, 0.0)
    b.on_805(1, {0, 1}, 0.0)
    now, waits = 0.0, []
    for _ in range(5):
        start = now
        while (probe := b.due(now)) is None:
            now += 60.0
        waits.append(now - start)
        b.on_805(probe, {probe}, now)
    assert waits == [3_600.0, 7_200.0, 14_400.0, 14_400.0, 14_400.0]


class BudgetMachine(RuleBasedStateMachine):
    """Any mix of 805s, reconnects and time: the budget never drops below one socket nor above its size,
    and a socket comes back only after a quiet period (no probe within ``regrow_after_s`` of an 805)."""

    @initialize()
    def start(self) -> None:
        self.b = budget(window_s=60, regrow_after_s=300, regrow_max_s=1_200)
        self.now = 0.0
        self.down: set[int] = set()
        self.up = set(range(5))

    @rule(sid=st.integers(0, 4))
    def an_805(self, sid: int) -> None:
        if sid not in self.up:
            return
        self.up.discard(sid)
        self.down.add(sid)
        given = self.b.on_805(sid, set(self.down), self.now)
        assert given <= self.down
        assert self.b.last_805 == self.now

    @rule(seconds=st.floats(0, 2_000))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        probe = self.b.due(self.now)
        if probe is not None:
            assert self.b.last_805 is not None
            assert self.now - self.b.last_805 >= self.b.regrow_after_s

    @precondition(lambda self: bool(self.down))
    @rule(data=st.data())
    def a_socket_reconnects(self, data: st.DataObject) -> None:
        allowed = sorted(self.down - self.b.given_up)
        if not allowed:
            return
        sid = data.draw(st.sampled_from(allowed))
        self.down.discard(sid)
        self.up.add(sid)

    @invariant()
    def within_bounds(self) -> None:
        assert 1 <= self.b.size <= 5
        assert self.b.given_up <= set(range(5))
        assert not (self.b.given_up & self.up), "a given-up socket is connected"


TestBudgetMachine = BudgetMachine.TestCase
