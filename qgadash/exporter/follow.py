"""The store's changes, followed on the event loop: polls counted, VMs' text re-rendered.

The exporter's only reader of the store's change notifications (`take_changes` hands
each change out once). A notification schedules a drain on the loop; a drain renders
the changed VMs' lines into the `FleetExposition`, in slices of `DRAIN_SLICE` seconds
so that a burst (10,000 VMs found at start) does not hold polls up. The HTTP server's
thread reads what the drains wrote and never waits for one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from qgadash.exporter.exposition import FleetExposition
from qgadash.exporter.polls import PollCounter
from qgadash.fleet.store import FleetStore

__all__ = ["DRAIN_SLICE", "StoreFollower"]

DRAIN_SLICE = 0.025  # seconds of rendering between two turns of the event loop
DRAIN_STEP = 100  # VMs rendered between two looks at the clock


class StoreFollower:
    """Feeds the store's changes to `exposition` and `counter`; `start`, then `stop`."""

    def __init__(
        self, store: FleetStore, exposition: FleetExposition, counter: PollCounter
    ) -> None:
        self._store = store
        self._exposition = exposition
        self._counter = counter
        self._pending: set[str] = set()  # changed, not rendered yet
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Subscribe, and take in the whole store as it is now."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.subscribe(self._changed)
        self._store.take_changes()  # everything is taken below
        self._pending.update(self._store.ids())
        self._exposition.add(self._store.ids())
        self._exposition.set_hypervisors(self._store.hypervisors())
        self.drain()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._loop = None

    @property
    def behind(self) -> int:
        """VMs changed and not rendered yet."""
        return len(self._pending)

    def _changed(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Render what changed since the last drain, for at most one slice."""
        self._scheduled = False
        store = self._store
        changed, removed, hypervisors = store.take_changes()
        pending = self._pending
        pending.update(changed)
        if any(vm_id not in self._exposition for vm_id in changed):
            self._exposition.add([vm_id for vm_id in store.ids() if vm_id in changed])
        for vm_id in removed:
            pending.discard(vm_id)
            self._counter.removed(vm_id)
            self._exposition.remove(vm_id)
        if hypervisors:
            self._exposition.set_hypervisors(store.hypervisors())
        slice_end = time.perf_counter() + DRAIN_SLICE
        done = 0
        while pending:
            vm_id = pending.pop()
            snap = store.get(vm_id)
            if snap is None:  # removed since (its removal is in the next take)
                continue
            self._counter.changed(vm_id, snap)
            self._exposition.update(vm_id, snap)
            done += 1
            if done % DRAIN_STEP == 0 and time.perf_counter() > slice_end:
                break
        self._counter.publish()
        if pending:
            self._schedule()
