"""The fleet screen's incremental bookkeeping answers what a pass over the fleet does:
`ShownRows.order` is `sort_ids`, `ShownRows.content_widths` is `content_widths`, the
header's counts from the store's tally are `count_fleet`'s, after any changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from qgadash.agent.replies import Interface, IpAddress, Load, OsInfo
from qgadash.fleet.model import (
    AgentState,
    FreezeState,
    GuestFacts,
    HypervisorStatus,
    Lifecycle,
    VmRef,
    VmSnapshot,
)
from qgadash.fleet.store import FleetStore
from qgadash.transport.base import HypervisorState
from qgadash.ui.fleet_rows import ShownRows
from qgadash.ui.fleet_view import (
    SORTABLE,
    content_widths,
    count_fleet,
    counts_from_tally,
    sort_ids,
)

# Ids unique under the natural sort (no leading zeros, lower case): `sort_ids` breaks
# ties of equal natural keys by its input order, ShownRows by the id.
IDS = ["hv1/vm-1", "hv1/vm-2", "hv1/vm-10", "hv2/vm-9", "hv10/vm-1", "hv10/vm-100"]
REFS = {vm_id: VmRef(vm_id.split("/")[0], vm_id.split("/")[1], "unix:/x.sock") for vm_id in IDS}
OSES = [
    None,
    OsInfo("debian", "Debian GNU/Linux", None, None, "12", None, None, None, None),
    OsInfo(
        "mswindows", "Microsoft Windows Server 2022", None, None, "2022", None, None, None, None
    ),
]


def interfaces(ip: str | None) -> tuple[Interface, ...] | None:
    if ip is None:
        return None
    return (Interface("eth0", None, (IpAddress(ip, 24, "ipv4"),), None),)


facts = st.builds(
    lambda os, host, ip, load: GuestFacts(
        os=os,
        hostname=host,
        interfaces=interfaces(ip),
        load=None if load is None else Load(load, 0, 0),
    ),
    st.sampled_from(OSES),
    st.sampled_from([None, "a", "web-1", "a-rather-long-hostname-of-a-guest-that-is-too-long"]),
    st.sampled_from([None, "10.0.0.1", "192.168.100.200"]),
    st.sampled_from([None, 0.0, 0.5, 3.25]),
)
snapshots = st.builds(
    lambda vm_id, agent, latency, seen, fx, freeze, deadline, thaw_error, life: VmSnapshot(
        REFS[vm_id],
        agent,
        latency_ms=latency,
        last_seen=seen,
        facts=fx,
        freeze=freeze,
        thaw_deadline=deadline,
        thaw_error=thaw_error,
        lifecycle=life,
    ),
    st.sampled_from(IDS),
    st.sampled_from(AgentState),
    st.sampled_from([None, 0.4, 2.0, 2.0, 800.0]),
    st.sampled_from([None, 100.0, 160.0]),
    facts,
    st.sampled_from(FreezeState),
    st.sampled_from([None, 1000.0]),
    st.sampled_from([None, "thaw failed"]),
    st.sampled_from([None, Lifecycle("reboot", 1.0), Lifecycle("suspend-ram", 1.0)]),
)
# A change: a new snapshot, the same VM with only its latency or only its state changed
# (the facts the widths are measured from are the same objects: the shortcut in `put`),
# or it goes.
states = st.one_of(  # one field at a time, so the others stay the same objects
    st.fixed_dictionaries({"agent": st.sampled_from(AgentState)}),
    st.fixed_dictionaries({"freeze": st.sampled_from(FreezeState)}),
    st.fixed_dictionaries({"thaw_deadline": st.sampled_from([None, 1000.0])}),
    st.fixed_dictionaries({"thaw_error": st.sampled_from([None, "thaw failed"])}),
    st.fixed_dictionaries({"lifecycle": st.sampled_from([None, Lifecycle("halt", 1.0)])}),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("put"), snapshots),
        st.tuples(st.just("state"), st.integers(0, 99), states),
        st.tuples(st.just("poll"), st.integers(0, 99), st.sampled_from([None, 0.1, 2.0, 9.0])),
        st.tuples(st.just("discard"), st.sampled_from(IDS)),
        st.tuples(st.just("forget"), st.sampled_from(IDS)),
    ),
    max_size=40,
)


THAWED_VM = VmSnapshot(REFS[IDS[0]], AgentState.OK, freeze=FreezeState.THAWED)


@settings(max_examples=300)
@given(st.sampled_from(SORTABLE), st.booleans(), st.lists(snapshots, max_size=8), steps)
@example("fs", False, [THAWED_VM], [("state", 0, {"freeze": FreezeState.FROZEN})])
def test_shown_rows_answer_what_a_pass_over_the_shown_snapshots_does(
    column: str, reverse: bool, first: list[VmSnapshot], changes: list[tuple[Any, ...]]
) -> None:
    shown: dict[str, VmSnapshot] = {}
    for snap in first:
        shown[snap.id] = snap
    rows = ShownRows()
    rows.reset(shown.values(), column, reverse)
    for change in changes:
        if change[0] == "put":
            snap = change[1]
            assert isinstance(snap, VmSnapshot)
            shown[snap.id] = snap
            rows.put(snap)
        elif change[0] in ("poll", "state"):
            if not shown:
                continue
            assert isinstance(change[1], int)
            old = list(shown.values())[change[1] % len(shown)]  # a shown VM
            if change[0] == "poll":
                new = dataclasses.replace(old, latency_ms=change[2])
            else:
                new = dataclasses.replace(old, **change[2])
            shown[new.id] = new
            rows.put(new, new.id)
        elif change[0] == "discard":
            shown.pop(change[1], None)
            rows.discard(change[1])
        else:
            shown.pop(change[1], None)
            rows.forget([change[1]])
        expected = sort_ids(shown.values(), column, reverse)
        assert rows.order() == expected
        assert rows.content_widths() == content_widths(shown.values())
        assert set(rows) == set(shown) and len(rows) == len(shown)


def test_put_says_whether_the_sort_value_changed() -> None:
    ref = REFS[IDS[0]]
    rows = ShownRows("rtt", True)
    snap = VmSnapshot(ref, AgentState.OK, latency_ms=1.0)
    assert rows.put(snap)  # new
    assert not rows.put(dataclasses.replace(snap, last_seen=5.0))  # RTT the same
    assert rows.put(dataclasses.replace(snap, latency_ms=2.0))
    by_vm = ShownRows("vm", False)
    assert by_vm.put(snap)
    assert not by_vm.put(dataclasses.replace(snap, latency_ms=2.0))


@settings(max_examples=100)
@given(
    st.lists(snapshots, max_size=30),
    st.sets(st.sampled_from(IDS)),
    st.sets(st.sampled_from(IDS)),
)
def test_header_counts_from_the_tally_equal_a_count_over_the_fleet(
    puts: list[VmSnapshot], removed: set[str], held: set[str]
) -> None:
    store = FleetStore()
    for snap in puts:
        store.put(snap)
    for vm_id in removed:
        store.remove(vm_id)
    hvs = [
        HypervisorStatus("hv2", HypervisorState.CONNECTED),
        HypervisorStatus("hv1", HypervisorState.UNREACHABLE),
    ]
    assert counts_from_tally(store.tally(), hvs, held) == count_fleet(store.snapshots(), hvs, held)
