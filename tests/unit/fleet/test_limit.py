"""The in-flight cap: never more than its size at once, first come first served, and
no slot lost to a cancelled waiter."""

from __future__ import annotations

import asyncio
import random

import pytest

from qgadash.fleet.limit import InFlightLimit


async def test_never_more_than_the_size_at_once_and_in_arrival_order() -> None:
    limit = InFlightLimit(3)
    running = 0
    most = 0
    started: list[int] = []

    async def one(i: int) -> None:
        nonlocal running, most
        async with limit:
            started.append(i)
            running += 1
            most = max(most, running)
            for _ in range(random.randrange(1, 4)):
                await asyncio.sleep(0)
            running -= 1

    await asyncio.gather(*(one(i) for i in range(200)))
    assert most == 3
    assert started == list(range(200))
    assert limit.free == 3


async def test_cancelled_waiters_lose_no_slot() -> None:
    limit = InFlightLimit(2)
    release = asyncio.Event()

    async def holder() -> None:
        async with limit:
            await release.wait()

    async def waiter() -> None:
        async with limit:
            pass

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    await asyncio.sleep(0)
    assert limit.free == 0
    waiting = [asyncio.create_task(waiter()) for _ in range(10)]
    await asyncio.sleep(0)
    for task in waiting[::2]:  # cancelled while queued
        task.cancel()
    release.set()
    # One waiter is handed a slot and cancelled before it runs: it must pass the slot on.
    await asyncio.sleep(0)
    waiting[1].cancel()
    await asyncio.gather(*holders, *waiting, return_exceptions=True)
    assert [t.cancelled() for t in waiting].count(False) >= 4
    assert limit.free == 2
    # And the cap still works afterwards.
    async with limit, limit:
        assert limit.free == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        InFlightLimit(0)
