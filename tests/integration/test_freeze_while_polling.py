"""A freeze while the dashboard's polls run: the poll that lands while the hold is being
made durable must not end the hold.

Found by the dashboard signal test (tests/ui/test_dashboard_signals.py): between taking
the hold and sending the freeze, the engine arms a keeper (starting the local keeper
process takes ~0.5 s, an arm over SSH ~0.2 s); a poll answered in that window truly
says "thawed", and the engine took that for "someone else thawed it" and released the
hold (removing its journal record). The freeze then went out with nobody owing its thaw:
that guest stayed frozen through quit, signals and keepers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import HoldJournal
from qgadash.sim import SimFleet, SimVm, make_profile
from tests.integration.realagent import short_temp_dir

COUNT = 3


async def wait_until(condition: Callable[[], bool], what: str, seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def sim() -> AsyncIterator[SimFleet]:
    directory = short_temp_dir("qfp-sim-")
    vms = [SimVm(f"vm{i}", make_profile(i)) for i in range(COUNT)]
    try:
        async with SimFleet(directory, vms) as fleet:
            yield fleet
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def engine(tmp_path: Path, sim: SimFleet) -> AsyncIterator[FleetEngine]:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        "[settings]\npoll_interval = 0.1\ntimeout = 1.0\naction_timeout = 2.0\n\n"
        '[[hypervisor]]\nname = "sim"\n'
        f"agents = [{json.dumps(str(sim.directory / '*.sock'))}]\n"
        'session = "per-poll"\n'
    )
    journal = HoldJournal(tmp_path / "holds")
    engine = FleetEngine(load_config(hosts), journal=journal)
    try:
        yield engine  # its local keeper exits by itself once idle
    finally:
        await engine.stop()


async def test_a_poll_answered_while_the_keeper_is_armed_does_not_end_the_hold(
    engine: FleetEngine, sim: SimFleet
) -> None:
    ids = [f"sim/{vm.name}" for vm in sim.vms]
    await engine.start()
    await wait_until(lambda: all(engine.store.get(i) for i in ids), "discovery", 10)
    await wait_until(
        lambda: all(engine.store.get(i).last_poll for i in ids),  # type: ignore[union-attr]
        "first polls",
        10,
    )
    real_start = engine.keeping._ensure_local_keeper

    def polls() -> dict[str, float | None]:
        return {i: engine.store.get(i).last_poll for i in ids}  # type: ignore[union-attr]

    async def keeper_start_with_polls_meanwhile() -> None:
        """The real keeper start, and every VM answers a poll before the freeze is sent
        (as polls do, at random, while a keeper starts)."""
        before = polls()
        await real_start()
        await wait_until(lambda: all(polls()[i] != before[i] for i in ids), "a poll of each VM", 5)

    engine.keeping._ensure_local_keeper = keeper_start_with_polls_meanwhile  # type: ignore[method-assign]
    results = await engine.freeze(ids, thaw_after=600)
    assert [r.ok for r in results] == [True] * COUNT, results
    assert sorted(n for n in (vm.name for vm in sim.vms) if sim.agent(n).frozen) == [
        vm.name for vm in sim.vms
    ]
    # Every freeze sent is owed a thaw: held by the guard, on record in the journal.
    assert sorted(engine.frozen_by_us()) == ids
    assert engine.keeping.journal is not None
    assert sorted(r.vm_id for r in engine.keeping.journal.load()[0]) == ids
    # And polls of the frozen guests keep it so.
    before = polls()
    await wait_until(lambda: all(polls()[i] != before[i] for i in ids), "more polls", 5)
    assert sorted(engine.frozen_by_us()) == ids
    results = await engine.stop("quit")
    assert sorted(r.vm_id for r in results if r.ok) == ids
    assert not any(sim.agent(vm.name).frozen for vm in sim.vms)


async def test_a_stop_while_keepers_are_armed_sends_no_freeze_nobody_owes(
    engine: FleetEngine, sim: SimFleet
) -> None:
    """A signal (or quit) lands while the freezes' keepers are being armed: the stop
    thaws (a no-op: not frozen yet) and ends those holds, so the freezes must not go
    out afterwards, and nothing of their holds may stay in the journal."""
    ids = [f"sim/{vm.name}" for vm in sim.vms]
    await engine.discover()
    real_start = engine.keeping._ensure_local_keeper
    arming = asyncio.Event()
    go_on = asyncio.Event()

    async def keeper_start_while_a_signal_lands() -> None:
        await real_start()
        arming.set()
        await go_on.wait()

    engine.keeping._ensure_local_keeper = keeper_start_while_a_signal_lands  # type: ignore[method-assign]
    freezing = asyncio.create_task(engine.freeze(ids, thaw_after=600))
    await arming.wait()
    stopping = asyncio.create_task(engine.stop("signal SIGTERM"))
    await wait_until(lambda: engine.frozen_by_us() == [], "the stop's thaws", 5)
    go_on.set()
    results = await freezing
    await stopping
    assert not [vm.name for vm in sim.vms if sim.agent(vm.name).frozen], results
    assert not any(r.ok for r in results), results
    assert engine.keeping.journal is not None
    assert engine.keeping.journal.load() == ([], [])
