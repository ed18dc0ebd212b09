"""The fleet-wide cap on requests in flight.

asyncio.Semaphore (3.11) leaves each woken waiter in its queue until that waiter runs,
so every release walks past all the ones already woken: with a thousand polls queued
behind a cap of 256, that walk was a visible share of a poll's CPU. Here a release
hands its slot straight to the first live waiter, and a waiter cancelled after being
handed a slot passes it on, so a slot is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType


class InFlightLimit:
    """`async with limit:` runs at most `size` bodies at once, first come first served."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        """Slots nobody holds or has been handed."""
        return self._free

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: the next one gets it
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to this waiter, never back to free
                return
        self._free += 1
