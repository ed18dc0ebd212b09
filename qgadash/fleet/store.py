"""The state store: one immutable snapshot per VM, with change notifications.

Writers replace snapshots; readers (dashboard, CLI) take the set of changed ids since
their last look, so a UI applies only dirty rows in one batch per tick. Histories for
rates and sparklines live beside the snapshots in bounded rings. The fleet-wide counts a
header shows (`tally`) are kept as snapshots are replaced: reading them costs the same
at 10 VMs as at 10,000.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from qgadash.fleet.model import AgentState, FreezeState, HypervisorStatus, VmRef, VmSnapshot

HISTORY_LENGTH = 60

Listener = Callable[[], None]


class CounterSample(NamedTuple):
    """One interface's byte counters at one poll (a NamedTuple: one per NIC per poll)."""

    at: float  # monotonic seconds
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, slots=True)
class FleetTally:
    """Counts over every VM in the store at one moment (what `tally` answers)."""

    total: int
    by_state: dict[AgentState, int]  # states with no VM are absent
    frozen: frozenset[str]  # ids of the VMs whose filesystems are frozen
    thaw_errors: int  # VMs with a thaw this process owes and could not do


class FleetStore:
    """Holds the fleet's current state; all mutation goes through here."""

    def __init__(self) -> None:
        self._vms: dict[str, VmSnapshot] = {}
        self._hypervisors: dict[str, HypervisorStatus] = {}
        self._changed: set[str] = set()
        self._removed: set[str] = set()
        self._hv_changed = False
        self._listeners: list[Listener] = []
        self._notified = False
        self._nic_history: dict[str, dict[str, deque[CounterSample]]] = {}
        self._notes: dict[str, str] = {}  # per VM: what its channel says (agent/client.py)
        # What `tally` answers, kept by `_count` as snapshots come and go.
        self._by_state: Counter[AgentState] = Counter()
        self._frozen: set[str] = set()
        self._thaw_errors = 0

    # -- reading -------------------------------------------------------------------

    def get(self, vm_id: str) -> VmSnapshot | None:
        return self._vms.get(vm_id)

    def snapshots(self) -> list[VmSnapshot]:
        return list(self._vms.values())

    def ids(self) -> list[str]:
        return list(self._vms)

    def __len__(self) -> int:
        return len(self._vms)

    def tally(self) -> FleetTally:
        """How many VMs are in each agent state, which are frozen, how many owe a thaw."""
        by_state = {state: n for state, n in self._by_state.items() if n}
        return FleetTally(len(self._vms), by_state, frozenset(self._frozen), self._thaw_errors)

    def hypervisors(self) -> list[HypervisorStatus]:
        return list(self._hypervisors.values())

    def take_changes(self) -> tuple[set[str], set[str], bool]:
        """Ids changed and removed since the last call, and whether hypervisors changed."""
        changed, removed, hv = self._changed, self._removed, self._hv_changed
        self._changed, self._removed, self._hv_changed = set(), set(), False
        self._notified = False
        return changed, removed, hv

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` once when something changes after the last `take_changes`."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def note(self, vm_id: str) -> str | None:
        """What the VM's channel says the operator should know (an old agent's adaptation,
        a libvirt taint), or None."""
        return self._notes.get(vm_id)

    def notes(self) -> dict[str, str]:
        return dict(self._notes)

    def set_note(self, vm_id: str, note: str | None) -> None:
        if self._notes.get(vm_id) == note or vm_id not in self._vms:
            return
        if note is None:
            del self._notes[vm_id]
        else:
            self._notes[vm_id] = note
        self._changed.add(vm_id)
        self._notify()

    def nic_history(self, vm_id: str) -> dict[str, list[CounterSample]]:
        return {name: list(ring) for name, ring in self._nic_history.get(vm_id, {}).items()}

    # -- writing ----------------------------------------------------------------------

    def add(self, ref: VmRef) -> VmSnapshot:
        existing = self._vms.get(ref.id)
        if existing is not None:
            if existing.ref != ref:
                self.put(dataclasses.replace(existing, ref=ref))
            return self._vms[ref.id]
        snapshot = VmSnapshot(ref=ref)
        self.put(snapshot)
        return snapshot

    def put(self, snapshot: VmSnapshot) -> None:
        old = self._vms.get(snapshot.id)
        if old is snapshot:
            return
        if old is not None:
            self._count(old, -1)
        self._count(snapshot, 1)
        self._vms[snapshot.id] = snapshot
        self._removed.discard(snapshot.id)
        self._changed.add(snapshot.id)
        self._notify()

    def update(self, vm_id: str, **changes: Any) -> VmSnapshot | None:
        current = self._vms.get(vm_id)
        if current is None:
            return None
        new = dataclasses.replace(current, **changes)
        self.put(new)
        return new

    def remove(self, vm_id: str) -> None:
        old = self._vms.pop(vm_id, None)
        if old is not None:
            self._count(old, -1)
            self._changed.discard(vm_id)
            self._removed.add(vm_id)
            self._nic_history.pop(vm_id, None)
            self._notes.pop(vm_id, None)
            self._notify()

    def set_hypervisor(self, status: HypervisorStatus) -> None:
        if self._hypervisors.get(status.name) != status:
            self._hypervisors[status.name] = status
            self._hv_changed = True
            self._notify()

    def record_nic_counters(self, vm_id: str, samples: Iterable[tuple[str, CounterSample]]) -> None:
        rings = self._nic_history.setdefault(vm_id, {})
        for name, sample in samples:
            ring = rings.get(name)
            if ring is None:
                if len(rings) >= 64:  # a guest cannot grow our memory with endless NICs
                    continue
                ring = rings[name] = deque(maxlen=HISTORY_LENGTH)
            ring.append(sample)

    def _count(self, snapshot: VmSnapshot, sign: int) -> None:
        """Add (1) or take away (-1) one snapshot's share of the tally."""
        self._by_state[snapshot.agent] += sign
        if snapshot.freeze is FreezeState.FROZEN:
            if sign > 0:
                self._frozen.add(snapshot.id)
            else:
                self._frozen.discard(snapshot.id)
        if snapshot.thaw_error is not None:
            self._thaw_errors += sign

    def _notify(self) -> None:
        if self._notified:
            return
        self._notified = True
        for listener in list(self._listeners):
            listener()
