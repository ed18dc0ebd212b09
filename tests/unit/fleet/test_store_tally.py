"""The store's running tally stays equal to a count over its snapshots, whatever the
order of puts and removals (the dashboard's header reads it instead of counting)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from qgadash.fleet.model import AgentState, FreezeState, VmRef, VmSnapshot
from qgadash.fleet.store import FleetStore, FleetTally


def recount(store: FleetStore) -> FleetTally:
    snaps = store.snapshots()
    by_state = Counter(s.agent for s in snaps)
    frozen = frozenset(s.id for s in snaps if s.freeze is FreezeState.FROZEN)
    thaw_errors = sum(1 for s in snaps if s.thaw_error is not None)
    return FleetTally(len(snaps), dict(by_state), frozen, thaw_errors)


snapshots = st.builds(
    lambda n, agent, freeze, thaw_error: VmSnapshot(
        VmRef("hv", f"vm-{n}", f"unix:/tmp/vm-{n}.sock"),
        agent,
        freeze=freeze,
        thaw_error=thaw_error,
    ),
    st.integers(0, 6),
    st.sampled_from(AgentState),
    st.sampled_from(FreezeState),
    st.sampled_from([None, "thaw failed: timeout"]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), snapshots),
        st.tuples(st.just("remove"), st.integers(0, 6).map(lambda n: f"hv/vm-{n}")),
        st.tuples(st.just("update"), st.integers(0, 6), st.sampled_from(AgentState)),
    ),
    max_size=60,
)


@given(operations)
def test_the_tally_equals_a_recount_after_any_changes(ops: list[tuple[Any, ...]]) -> None:
    store = FleetStore()
    for op in ops:
        if op[0] == "put":
            snap = op[1]
            assert isinstance(snap, VmSnapshot)
            store.put(snap)
            store.put(snap)  # the same snapshot again: no change, counted once
        elif op[0] == "remove":
            assert isinstance(op[1], str)
            store.remove(op[1])
        else:
            n, agent = op[1], op[2]
            store.update(f"hv/vm-{n}", agent=agent)
        assert store.tally() == recount(store)


def test_the_tally_of_an_empty_store() -> None:
    assert FleetStore().tally() == FleetTally(0, {}, frozenset(), 0)
