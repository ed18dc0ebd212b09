"""The dashboard on the real engine, polling simulated guests (qgadash.sim) over unix sockets.

Freezing, deadline thaws, failed thaws and quitting: test_freeze_on_engine.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.sim.fleet import SimFleet
from qgadash.ui.app import QgadashApp
from qgadash.ui.plain import sanitize
from qgadash.ui.screens.detail import DetailScreen

from .conftest import SIZE
from .screen import screen_text, wait_until


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[SimFleet, FleetEngine]]:
    fleet = SimFleet.demo(tmp_path / "sim", 24)
    await fleet.start()
    hosts = fleet.write_hosts_toml(
        tmp_path / "hosts.toml", hypervisor="demo", poll_interval=0.5, timeout=0.5
    )
    engine = FleetEngine(load_config(hosts))
    try:
        yield fleet, engine
    finally:
        await engine.stop()
        await fleet.stop()


def state(engine: FleetEngine, vm_id: str) -> AgentState:
    snap = engine.store.get(vm_id)
    assert snap is not None
    return snap.agent


async def test_the_simulated_fleet_fills_the_table(sim: tuple[SimFleet, FleetEngine]) -> None:
    _fleet, engine = sim
    app = QgadashApp(engine, config_label="demo")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(app.fleet.table.order) == 24)
        await wait_until(
            pilot, lambda: sum(s.agent is AgentState.OK for s in engine.store.snapshots()) >= 20
        )
        await wait_until(pilot, lambda: "demo/db-01" in screen_text(app))
        assert "24 VMs" in screen_text(app)
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("demo/db-01", "agent").plain == "ok"
        )
        # The guest with no agent running ends up "timeout", in the faults-only view.
        await wait_until(pilot, lambda: state(engine, "demo/web-04") is AgentState.TIMEOUT)
        await pilot.press("z")
        await wait_until(pilot, lambda: "demo/web-04" in app.fleet.table.order)


async def test_hostile_guest_text_from_the_simulator_is_shown_literally(tmp_path: Path) -> None:
    from qgadash.sim.fleet import SimVm
    from qgadash.sim.profiles import Fault, make_profile

    vm = SimVm("evil", make_profile(1, 0), Fault.MARKUP)
    async with SimFleet(tmp_path / "sim", [vm]) as fleet:
        hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", poll_interval=0.5, timeout=0.5)
        engine = FleetEngine(load_config(hosts))
        app = QgadashApp(engine)
        async with app.run_test(size=SIZE) as pilot:

            def hostname() -> str:
                snap = engine.store.get("sim/evil")
                return (snap.facts.hostname or "") if snap else ""

            # The simulator sends markup and escapes in every free-text string.
            await wait_until(pilot, lambda: "[" in hostname() or "\x1b" in hostname())
            # Literally, control characters made visible (the column may cut the end).
            await wait_until(pilot, lambda: sanitize(hostname())[:9] in screen_text(app))
            assert "\x1b" not in screen_text(app)
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
            await wait_until(pilot, lambda: sanitize(hostname())[:9] in screen_text(app))
            assert "\x1b" not in screen_text(app)
