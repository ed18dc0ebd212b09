"""Request timeouts for thousands of agents without a timer per request.

`asyncio.timeout` schedules, and then cancels, one timer-heap entry per use: on the
poll path of a large fleet that is a measurable share of all the CPU a request costs.
Here every deadline of one event loop goes into a bucket of `RESOLUTION` seconds, and
one sweep per bucket cancels the overdue tasks. A deadline may fire up to `RESOLUTION`
late, which is nothing beside agent timeouts of seconds.

`deadline(seconds)` is a plain (not async) context manager with the semantics of
`asyncio.timeout`: an overdue body is cancelled and the cancellation leaves the block
as `TimeoutError`; a cancellation from anyone else stays a cancellation.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType

RESOLUTION = 0.025


class Deadline:
    """One block under a deadline; made by `deadline`."""

    __slots__ = ("_bucket", "_cancelling", "_sweeper", "_task", "expired")

    def __init__(self, sweeper: DeadlineSweeper, task: asyncio.Task[object], bucket: int) -> None:
        self._sweeper = sweeper
        self._task = task
        self._bucket = bucket
        self._cancelling = task.cancelling()
        self.expired = False

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.expired:
            bucket = self._sweeper.buckets.get(self._bucket)
            if bucket is not None:
                bucket.pop(self, None)
            return
        # As asyncio.timeout: ours to turn into a timeout only if nobody else also
        # asked for the task to be cancelled meanwhile.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()


class DeadlineSweeper:
    """The deadlines of one event loop, bucketed by when they fall due.

    It holds no reference to its loop (the loop's timer holds it), so a finished loop
    and its sweeper go away together."""

    def __init__(self) -> None:
        self.buckets: dict[int, dict[Deadline, None]] = {}
        self._next_sweep: int | None = None  # the bucket the armed timer sweeps

    def add(self, loop: asyncio.AbstractEventLoop, seconds: float) -> Deadline:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        # The bucket that ends at or after the due time: never fires early.
        bucket = math.ceil((loop.time() + seconds) / RESOLUTION)
        entry = Deadline(self, task, bucket)
        members = self.buckets.get(bucket)
        if members is None:
            members = self.buckets[bucket] = {}
        members[entry] = None
        if self._next_sweep is None or bucket < self._next_sweep:
            self._arm(loop, bucket)
        return entry

    def _arm(self, loop: asyncio.AbstractEventLoop, bucket: int) -> None:
        self._next_sweep = bucket
        loop.call_at(bucket * RESOLUTION, self._sweep, bucket)

    def _sweep(self, armed_for: int) -> None:
        if armed_for != self._next_sweep:
            return  # superseded by an earlier bucket's timer, which re-armed
        self._next_sweep = None
        loop = asyncio.get_running_loop()
        now = math.floor(loop.time() / RESOLUTION)
        for bucket in sorted(self.buckets):
            members = self.buckets.pop(bucket)
            if bucket <= now:
                for entry in members:
                    entry._expire()
            elif members:  # the next bucket with anybody left in it
                self.buckets[bucket] = members
                self._arm(loop, bucket)
                return


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineSweeper] = (
    weakref.WeakKeyDictionary()
)
# The last loop asked for (weakly) and its sweeper: one dict lookup less per request.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop] | None, DeadlineSweeper | None] = (None, None)


def deadline(seconds: float) -> Deadline:
    """`with deadline(5):` – the block is cancelled after 5 s and raises TimeoutError."""
    global _last
    loop = asyncio.get_running_loop()
    last_ref, sweeper = _last
    if sweeper is None or last_ref is None or last_ref() is not loop:
        sweeper = _sweepers.get(loop)
        if sweeper is None:
            sweeper = _sweepers[loop] = DeadlineSweeper()
        _last = (weakref.ref(loop), sweeper)
    return sweeper.add(loop, seconds)
