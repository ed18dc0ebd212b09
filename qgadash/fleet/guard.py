"""The FreezeGuard: every freeze this process issues is thawed by a deadline.

A freeze is recorded *before* the freeze request goes out, so a freeze whose reply was
lost (timeout, link cut) is still thawed. At the deadline the guard thaws; a thaw that
fails is retried with backoff and reported (`thaw_error` in the store) until it
succeeds or the operator dismisses it. Stopping the engine thaws everything owned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qgadash.fleet.model import ActionResult
from qgadash.fleet.store import FleetStore

ThawFunction = Callable[[str], Awaitable[ActionResult]]
RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class _Hold:
    deadline: float | None  # wall clock; None: the operator asked for no automatic thaw
    timer: asyncio.Task[None] | None = None
    failures: int = 0


class FreezeGuard:
    def __init__(
        self, store: FleetStore, thaw: ThawFunction, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._thaw = thaw
        self._clock = clock
        self._holds: dict[str, _Hold] = {}
        self._closed = False

    def owned(self) -> list[str]:
        """VMs this process froze (or may have frozen) and has not yet thawed."""
        return list(self._holds)

    def deadline(self, vm_id: str) -> float | None:
        hold = self._holds.get(vm_id)
        return hold.deadline if hold else None

    def record(self, vm_id: str, thaw_after: float) -> float:
        """Take responsibility for thawing `vm_id` in `thaw_after` seconds; the deadline."""
        self.release(vm_id)
        deadline = self._clock() + thaw_after
        hold = _Hold(deadline)
        self._holds[vm_id] = hold
        if not self._closed:
            hold.timer = asyncio.get_running_loop().create_task(
                self._thaw_at_deadline(vm_id, hold), name=f"thaw-deadline:{vm_id}"
            )
        self._store.update(vm_id, thaw_deadline=deadline, thaw_error=None)
        return deadline

    def release(self, vm_id: str) -> None:
        """The VM is thawed (by us or someone else): nothing is owed any more."""
        hold = self._holds.pop(vm_id, None)
        if hold is None:
            return
        if hold.timer is not None and hold.timer is not asyncio.current_task():
            hold.timer.cancel()
        self._store.update(vm_id, thaw_deadline=None, thaw_error=None)

    def dismiss(self, vm_id: str) -> None:
        """The operator takes over a thaw this process could not do."""
        self.release(vm_id)

    async def _thaw_at_deadline(self, vm_id: str, hold: _Hold) -> None:
        assert hold.deadline is not None
        await asyncio.sleep(max(0.0, hold.deadline - self._clock()))
        while self._holds.get(vm_id) is hold:
            result = await self._thaw(vm_id)
            if result.ok:
                return  # the thaw path released the hold
            hold.failures += 1
            self._store.update(vm_id, thaw_error=f"thaw failed: {result.error}")
            await asyncio.sleep(RETRY_DELAYS[min(hold.failures, len(RETRY_DELAYS)) - 1])

    async def retry_now(self, vm_id: str) -> None:
        """A lost link came back: try an owed thaw at once if its deadline has passed."""
        hold = self._holds.get(vm_id)
        if hold is None or hold.deadline is None or hold.deadline > self._clock():
            return
        if hold.timer is not None:
            hold.timer.cancel()
        hold.timer = asyncio.get_running_loop().create_task(
            self._thaw_at_deadline(vm_id, hold), name=f"thaw-retry:{vm_id}"
        )

    async def thaw_all(self) -> list[ActionResult]:
        """Thaw everything owned now (quitting); results include every failure."""
        self._closed = True
        ids = list(self._holds)
        for vm_id in ids:
            timer = self._holds[vm_id].timer
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
        if not ids:
            return []
        results = await asyncio.gather(*(self._thaw(vm_id) for vm_id in ids))
        return list(results)
