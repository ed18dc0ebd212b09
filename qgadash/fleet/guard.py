"""The FreezeGuard: every freeze this process issues is thawed by its deadline.

A hold is taken (and, when a journal is given, written durably) *before* the freeze
request goes out, so a freeze whose reply was lost (timeout, link cut) is still thawed.
At the deadline the guard thaws; a thaw that fails is retried with backoff and reported
(`thaw_error` in the store) until it succeeds, someone else thaws the guest, or the
operator dismisses it. `thaw_all` (quit, signal) thaws every hold at once, timed or not,
and retries failures within a budget; once it has begun, no new hold can be taken.

Timers release holds while other code walks them, so nothing here iterates the live
dict across an `await`: every walk takes a copy of the holds first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from qgadash.fleet.model import ActionResult
from qgadash.fleet.store import FleetStore

ThawFunction = Callable[[str, str], Awaitable[ActionResult]]  # (vm id, reason) -> result
ReleaseHook = Callable[["Hold", str], None]  # (hold, why) after a hold ends
RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0)


log = logging.getLogger(__name__)


class GuardClosed(Exception):
    """The guard is thawing everything (quit, signal): no new freeze may start."""


@dataclass(slots=True, eq=False)
class Hold:
    """One freeze this process answers for. `deadline` None: the operator asked for no
    automatic thaw; it is still thawed on quit or signal."""

    vm_id: str
    deadline: float | None
    token: str = ""
    keeper: str = "none"  # who else thaws at the deadline: see qgadash.fleet.holds
    timer: asyncio.Task[None] | None = None
    failures: int = 0
    error: str | None = None


class FreezeGuard:
    def __init__(
        self,
        store: FleetStore,
        thaw: ThawFunction,
        clock: Callable[[], float] = time.time,
        on_release: ReleaseHook | None = None,
    ) -> None:
        self._store = store
        self._thaw = thaw
        self._clock = clock
        self._on_release = on_release
        self._holds: dict[str, Hold] = {}
        self._closed = False
        self._settled = asyncio.Event()  # set whenever no timed hold is left
        # Every deadline/retry task, until it ends: a released hold's task still has its
        # audit record to write, and exiting before it does would lose that record.
        self._timers: set[asyncio.Task[None]] = set()

    def _start_timer(self, hold: Hold, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        hold.timer = task

    async def _finish_timers(self) -> None:
        """Wait for deadline tasks that are past their release (writing their record)."""
        current = asyncio.current_task()
        # Done tasks leave `_timers` by a callback that runs later (when, differs between
        # Python versions): skip them here, or this loop spins without yielding.
        while pending := [t for t in self._timers if t is not current and not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- reading ---------------------------------------------------------------------

    def owned(self) -> list[str]:
        """VMs this process froze (or may have frozen) and has not yet thawed."""
        return list(self._holds)

    def owed(self) -> list[str]:
        """Held VMs with a deadline: thaws this process has promised."""
        return [h.vm_id for h in list(self._holds.values()) if h.deadline is not None]

    def holds(self) -> list[Hold]:
        return list(self._holds.values())

    def hold(self, vm_id: str) -> Hold | None:
        return self._holds.get(vm_id)

    def deadline(self, vm_id: str) -> float | None:
        hold = self._holds.get(vm_id)
        return hold.deadline if hold else None

    def next_deadline(self) -> float | None:
        deadlines = [h.deadline for h in list(self._holds.values()) if h.deadline is not None]
        return min(deadlines) if deadlines else None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- taking and ending holds -------------------------------------------------------

    def record(
        self,
        vm_id: str,
        thaw_after: float | None,
        *,
        token: str = "",
        keeper: str = "none",
        start: bool = True,
    ) -> Hold:
        """Take responsibility for `vm_id`: thaw in `thaw_after` seconds (None: only on
        quit or signal). With `start` False the deadline is provisional and its timer
        waits for `start_deadline` (the freeze is still being prepared: a deadline shorter
        than arming its keeper must not thaw before the freeze is even sent). Raises
        GuardClosed once `thaw_all` has begun."""
        if self._closed:
            raise GuardClosed("qgadash is stopping and thawing: no new freeze")
        self.release(vm_id, "superseded")
        deadline = None if thaw_after is None else self._clock() + thaw_after
        hold = Hold(vm_id, deadline, token, keeper)
        self._holds[vm_id] = hold
        if deadline is not None:
            self._settled.clear()
            if start:
                self._start_timer(hold, self._thaw_at_deadline(hold), f"thaw-deadline:{vm_id}")
        self._store.update(vm_id, thaw_deadline=deadline, thaw_error=None)
        return hold

    def start_deadline(self, vm_id: str, thaw_after: float) -> float | None:
        """The freeze is about to go out: its deadline counts from now. The new deadline,
        or None if the hold has ended meanwhile."""
        hold = self._holds.get(vm_id)
        if hold is None:
            return None
        if hold.timer is not None:
            hold.timer.cancel()
        hold.deadline = self._clock() + thaw_after
        self._settled.clear()
        self._start_timer(hold, self._thaw_at_deadline(hold), f"thaw-deadline:{vm_id}")
        self._store.update(vm_id, thaw_deadline=hold.deadline)
        return hold.deadline

    def release(self, vm_id: str, why: str = "thawed") -> None:
        """The VM is thawed (by us or someone else), or was never frozen: nothing is owed."""
        hold = self._holds.pop(vm_id, None)
        if hold is None:
            return
        if hold.timer is not None and hold.timer is not asyncio.current_task():
            hold.timer.cancel()
        self._store.update(vm_id, thaw_deadline=None, thaw_error=None)
        if not any(h.deadline is not None for h in self._holds.values()):
            self._settled.set()
        if self._on_release is not None:
            self._on_release(hold, why)

    def dismiss(self, vm_id: str) -> None:
        """The operator takes over a thaw this process could not do."""
        self.release(vm_id, "dismissed")

    async def settled(self) -> None:
        """Return once no timed hold is left (every deadline thaw succeeded or was
        dismissed) and every deadline task has finished its work."""
        if any(h.deadline is not None for h in self._holds.values()):
            await self._settled.wait()
        await self._finish_timers()

    # -- thawing -----------------------------------------------------------------------

    async def _thaw_at_deadline(self, hold: Hold) -> None:
        assert hold.deadline is not None
        await asyncio.sleep(max(0.0, hold.deadline - self._clock()))
        await self._thaw_until_done(hold, "deadline")

    async def _thaw_until_done(self, hold: Hold, reason: str) -> None:
        while self._holds.get(hold.vm_id) is hold:
            result = await self._thaw(hold.vm_id, reason)
            if result.ok or self._holds.get(hold.vm_id) is not hold:
                return  # the thaw path released the hold
            self._failed(hold, result)
            await asyncio.sleep(RETRY_DELAYS[min(hold.failures, len(RETRY_DELAYS)) - 1])
            reason = "deadline, retry"

    def _failed(self, hold: Hold, result: ActionResult) -> None:
        hold.failures += 1
        hold.error = f"thaw failed: {result.error}"
        log.warning("%s: thaw failed (attempt %d): %s", hold.vm_id, hold.failures, result.error)
        self._store.update(hold.vm_id, thaw_error=hold.error)

    async def retry_now(self, vm_id: str) -> None:
        """A lost link came back: try an owed thaw at once if its deadline has passed."""
        hold = self._holds.get(vm_id)
        if hold is None or hold.deadline is None or hold.deadline > self._clock() or self._closed:
            return
        if hold.timer is not None:
            hold.timer.cancel()
        self._start_timer(
            hold, self._thaw_until_done(hold, "deadline, retry"), f"thaw-retry:{vm_id}"
        )

    async def thaw_all(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        """Thaw every hold now, timed or not (quit, signal); no new hold after this.

        Failures are retried with backoff for up to `budget` seconds. One result per VM
        held when this was called (or taken while it ran), the last attempt's.
        """
        self._closed = True
        holds = list(self._holds.values())
        timers = [h.timer for h in holds if h.timer is not None]
        for timer in timers:
            timer.cancel()
        for timer in timers:
            if timer is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
        await self._finish_timers()
        results: dict[str, ActionResult] = {}
        give_up = time.monotonic() + budget
        attempt = 0
        while True:
            pending = [
                h
                for h in list(self._holds.values())
                if h.vm_id not in results or not results[h.vm_id].ok
            ]
            if not pending:
                break
            outcomes = await asyncio.gather(*(self._thaw(h.vm_id, reason) for h in pending))
            for hold, result in zip(pending, outcomes, strict=True):
                results[hold.vm_id] = result
                if not result.ok and self._holds.get(hold.vm_id) is hold:
                    self._failed(hold, result)
            attempt += 1
            left = [h for h in pending if self._holds.get(h.vm_id) is h]
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]
            if not left or time.monotonic() + delay > give_up:
                break
            await asyncio.sleep(delay)
            reason = reason if reason.endswith("retry") else f"{reason}, retry"
        return list(results.values())
