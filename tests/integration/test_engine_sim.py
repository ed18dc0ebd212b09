"""The engine against simulated agents: faults a real agent cannot be made to show."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentCommandError
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, FreezeState
from qgadash.sim import Fault, SimFleet, SimVm, make_profile

TIMEOUT = 1.0


async def engine_for(fleet: SimFleet, directory: Path, session: str = "held") -> FleetEngine:
    hosts = directory / "hosts.toml"
    fleet.write_hosts_toml(
        hosts, hypervisor="sim", timeout=TIMEOUT, poll_interval=0.5, session=session
    )
    return FleetEngine(load_config(hosts))


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[SimFleet]:
    faults = {3: Fault.SILENT, 5: Fault.GARBAGE, 7: Fault.DISCONNECT, 9: Fault.FROZEN}
    vms = [SimVm(f"vm{i}", make_profile(i), faults.get(i, Fault.NONE)) for i in range(12)]
    async with SimFleet(tmp_path / "sim", vms) as fleet:
        yield fleet


async def test_a_silent_agent_times_out_alone(tmp_path: Path, mixed: SimFleet) -> None:
    engine = await engine_for(mixed, tmp_path)
    try:
        started = time.monotonic()
        await engine.poll_once()
        elapsed = time.monotonic() - started
        states = {s.ref.name: s.agent for s in engine.store.snapshots()}
        assert states["vm3"] is AgentState.TIMEOUT
        assert all(states[f"vm{i}"] is AgentState.OK for i in (0, 1, 2, 4, 6, 8, 10, 11))
        # The whole poll costs one timeout, not one per silent VM on top of the others.
        assert elapsed < TIMEOUT * 2.5
    finally:
        await engine.stop()


async def test_garbage_and_mid_reply_disconnect_are_errors_and_sessions_recover(
    tmp_path: Path, mixed: SimFleet
) -> None:
    engine = await engine_for(mixed, tmp_path)
    try:
        await engine.poll_once()
        garbage, cut = engine.store.get("sim/vm5"), engine.store.get("sim/vm7")
        assert garbage is not None and garbage.agent is AgentState.ERROR and garbage.error
        assert (
            cut is not None
            and cut.agent is AgentState.ERROR
            and "middle of a reply" in (cut.error or "")
        )
        # The agents behave again: the next poll works without anyone doing anything.
        mixed.agent("vm5").fault = Fault.NONE
        mixed.agent("vm7").fault = Fault.NONE
        await engine.poll_vm("sim/vm5")
        await engine.poll_vm("sim/vm7")
        assert engine.store.get("sim/vm5").agent is AgentState.OK  # type: ignore[union-attr]
        assert engine.store.get("sim/vm7").agent is AgentState.OK  # type: ignore[union-attr]
    finally:
        await engine.stop()


async def test_frozen_guest_refuses_what_the_real_agent_refuses(
    tmp_path: Path, mixed: SimFleet
) -> None:
    engine = await engine_for(mixed, tmp_path)
    try:
        await engine.poll_once()
        frozen = engine.store.get("sim/vm9")
        assert frozen is not None and frozen.freeze is FreezeState.FROZEN
        with pytest.raises(AgentCommandError, match="has been disabled"):
            await engine.with_agent(
                "sim/vm9", lambda c: c.call("guest-exec", {"path": "/bin/true"}, timeout=TIMEOUT)
            )
        assert (
            await engine.with_agent(
                "sim/vm9", lambda c: c.call("guest-fsfreeze-status", timeout=TIMEOUT)
            )
            == "frozen"
        )
    finally:
        await engine.stop()


async def test_background_polling_fills_every_fact_once_per_vm(tmp_path: Path) -> None:
    """Regression: two poll loops per VM raced on the reply cache and lost OS and hostname."""
    async with SimFleet.healthy(tmp_path / "sim", 20) as fleet:
        engine = await engine_for(fleet, tmp_path)
        try:
            await engine.start()
            assert len(engine._tasks) == 20
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                snaps = engine.store.snapshots()
                if all(s.facts.hostname and s.facts.os and s.facts.filesystems for s in snaps):
                    break
                await asyncio.sleep(0.1)
            missing = [
                s.id for s in engine.store.snapshots() if not (s.facts.hostname and s.facts.os)
            ]
            assert not missing
            # Two more polls of every VM (0.5 s apart): the facts stay all along.
            since = time.time() + 0.5
            deadline = time.monotonic() + 10
            while not all((s.last_poll or 0) > since for s in engine.store.snapshots()):
                lost = [
                    s.id for s in engine.store.snapshots() if not (s.facts.hostname and s.facts.os)
                ]
                assert not lost, f"facts lost on a later poll: {lost}"
                assert time.monotonic() < deadline, "not every VM was polled twice more in 10 s"
                await asyncio.sleep(0.02)
        finally:
            await engine.stop()


async def test_freeze_guard_thaws_at_the_deadline_and_stop_thaws_the_rest(tmp_path: Path) -> None:
    async with SimFleet.healthy(tmp_path / "sim", 3) as fleet:
        engine = await engine_for(fleet, tmp_path)
        try:
            await engine.poll_once()
            ids = engine.store.ids()
            results = await engine.freeze(ids[:1], thaw_after=0.5)
            results += await engine.freeze(ids[1:], thaw_after=600)
            assert all(r.ok for r in results)
            assert all(fleet.agent(i.split("/")[1]).frozen for i in ids)
            deadline = time.monotonic() + 5
            while fleet.agent(ids[0].split("/")[1]).frozen and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not fleet.agent(ids[0].split("/")[1]).frozen
            assert set(engine.frozen_by_us()) == set(ids[1:])
        finally:
            thawed = await engine.stop()
        assert {r.vm_id for r in thawed if r.ok} == set(ids[1:])
        assert not any(fleet.agent(i.split("/")[1]).frozen for i in ids)
