"""The simulator's per-socket slot sets: a swap-remove array must hold exactly the slots of a plain set
after any sequence of adds and removes (the stream draws from its array)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tickgate.sim.emitter import _SlotSet


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200)), max_size=400))
def test_slot_set_matches_a_set(ops: list[tuple[bool, int]]) -> None:
    slots = _SlotSet()
    model: set[int] = set()
    for add, slot in ops:
        if add:
            slots.add(slot)
            model.add(slot)
        else:
            slots.discard(slot)
            model.discard(slot)
        assert len(slots) == len(model)
    view = slots.view().tolist()
    assert sorted(view) == sorted(model)
    assert len(view) == len(set(view))
