"""The typed link between a reply's parser and the member of GuestFacts it fills."""

from __future__ import annotations

import dataclasses

from qgadash.fleet.model import GuestFacts
from qgadash.fleet.polling import facts
from qgadash.fleet.polling.facts import FOLDS, Fact, FactsDraft


def _declared_facts() -> dict[str, Fact[object]]:
    return {name: value for name, value in vars(facts).items() if isinstance(value, Fact)}


def test_every_member_of_guest_facts_has_one_fact_declared_with_its_type() -> None:
    """mypy checks each parser against its Fact's T; this checks each T against the
    dataclass, so that the chain parser → Fact → GuestFacts member is typed end to end."""
    members = {f.name: f.type for f in dataclasses.fields(GuestFacts)}
    declared = _declared_facts()
    assert sorted(f.name for f in declared.values()) == sorted(members)
    for variable, fact in declared.items():
        assert facts.__annotations__[variable] == f"Fact[{members[fact.name]}]", variable


def test_a_draft_with_no_change_is_the_same_object_and_one_with_changes_a_new_one() -> None:
    base = GuestFacts(hostname="a", time_drift_s=1.0)
    assert FactsDraft(base).result() is base
    draft = FactsDraft(base)
    draft.set(facts.HOSTNAME, "b")
    draft.set(facts.TIME_DRIFT_S, None)
    assert draft.result() == GuestFacts(hostname="b")
    assert base == GuestFacts(hostname="a", time_drift_s=1.0)  # untouched


def test_each_fold_fills_its_own_member() -> None:
    for name, fold in FOLDS.items():
        draft = FactsDraft(GuestFacts())
        marker = object()
        draft.set(fold.fact, marker)
        result = draft.result()
        assert getattr(result, fold.fact.name) is marker, name
        assert sum(1 for f in dataclasses.fields(result) if getattr(result, f.name) is marker) == 1
