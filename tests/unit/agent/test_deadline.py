"""The bucketed request deadlines behave like asyncio.timeout."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from qgadash.agent import deadline as deadline_module
from qgadash.agent.deadline import RESOLUTION, deadline


def pending_entries() -> int:
    loop = asyncio.get_running_loop()
    sweeper = deadline_module._sweepers.get(loop)
    return 0 if sweeper is None else sum(len(b) for b in sweeper.buckets.values())


async def test_an_overdue_block_raises_timeout_never_early() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadline(0.1):
        await asyncio.sleep(10)
    assert loop.time() - started >= 0.1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # no cancellation left pending for the task


async def test_a_block_that_finishes_in_time_leaves_nothing_behind() -> None:
    with deadline(0.05) as d:
        await asyncio.sleep(0)
    assert not d.expired
    assert pending_entries() == 0
    # A later deadline fires, so the sweeps passed the first one's due time: had it been
    # left armed, it would have cancelled this task first (a CancelledError, not a timeout).
    with pytest.raises(TimeoutError), deadline(0.05 + 2 * RESOLUTION):
        await asyncio.sleep(10)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        with deadline(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pending_entries() == 0


async def test_a_cancellation_racing_the_deadline_is_not_swallowed() -> None:
    """Both the deadline and somebody else cancel: the block must not report a timeout."""

    async def body() -> None:
        with deadline(0.05):
            try:
                await asyncio.sleep(10)
            finally:
                # Cancelled by the deadline; another cancel arrives before the block ends.
                asyncio.current_task().cancel()  # type: ignore[union-attr]

    task = asyncio.create_task(body())
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_deadlines_each_report_their_own_expiry() -> None:
    # The inner one is shorter: it times out, the outer block goes on.
    with deadline(10) as outer:
        with pytest.raises(TimeoutError), deadline(0.05):
            await asyncio.sleep(10)
        await asyncio.sleep(0)
    assert not outer.expired
    # The outer one is shorter: the inner block sees a cancellation, the outer a timeout.
    with pytest.raises(TimeoutError), deadline(0.05), deadline(10) as inner:
        await asyncio.sleep(10)
    assert not inner.expired
    assert pending_entries() == 0


async def test_many_deadlines_fire_for_exactly_the_overdue_tasks() -> None:
    async def one(i: int) -> str:
        # Even ones finish well within their deadline; odd ones overrun it.
        try:
            with deadline(0.1 + (i % 7) * RESOLUTION):
                await asyncio.sleep(0.01 if i % 2 == 0 else 10)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert results == ["done" if i % 2 == 0 else "timeout" for i in range(500)]
    assert pending_entries() == 0


def test_each_event_loop_has_its_own_deadlines() -> None:
    async def overrun() -> bool:
        try:
            with deadline(0.05):
                await asyncio.sleep(10)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(overrun()) and asyncio.run(overrun())


async def test_outside_a_task_is_an_error() -> None:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def callback() -> None:  # runs on the loop, but in no task: nothing to cancel
        try:
            deadline(1)
        except RuntimeError as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    loop.call_soon(callback)
    assert isinstance(await outcome, RuntimeError)


def test_a_finished_loop_is_not_kept_alive() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def overrun() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        with pytest.raises(TimeoutError), deadline(0.05):
            await asyncio.sleep(10)

    asyncio.run(overrun())
    gc.collect()
    assert loops[0]() is None
