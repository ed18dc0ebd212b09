"""Lifecycle rows on real guests (issue 14, item 2): a guest powered down and one
suspended to RAM from the dashboard keep their rows, as "shut off by you" and
"suspended (ram)" (agent.state stopped / suspended in the JSON), checked against
QEMU; the suspended one is an ordinary row again once it wakes up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.fleet.report import status_document
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.modals import ActionRunScreen, PowerScreen
from tests.guests.fixtures import GuestFactory
from tests.guests.product import vm_id, write_hosts
from tests.guests.vm import GuestSpec
from tests.ui.screen import screen_text

pytestmark = pytest.mark.guest
SIZE = (160, 50)


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 60.0
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, (
            f"condition not met in time; the screen:\n{screen_text(pilot.app)}"
        )
        await pilot.pause(0.1)


async def power(pilot: Pilot[Any], app: QgadashApp, vm: str, option_key: str) -> None:
    """Cursor on `vm`, p, the option by its digit, confirm (Cancel has the focus)."""
    app.fleet.table.move_to(vm)
    await pilot.press("p")
    await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
    await wait_until(pilot, lambda: isinstance(app.focused, Button))
    assert isinstance(app.focused, Button) and app.focused.id == "cancel"
    await pilot.press(option_key)
    await pilot.pause()
    app.screen.query_one("#confirm", Button).press()
    await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
    run = app.screen
    assert isinstance(run, ActionRunScreen)
    await wait_until(pilot, lambda: run.finished)
    assert [r.ok for r in run.results] == [True], run.results
    await pilot.press("escape")


async def test_dashboard_rows_of_real_guests_shut_down_and_suspended(
    tmp_path: Path, guest_factory: GuestFactory
) -> None:
    off, sleeper = guest_factory.many(
        [
            GuestSpec(name="lcoff", ip="10.0.2.31/24"),
            # PVH-booted guests cannot resume from S3 (guests.md): the bzImage for RAM.
            GuestSpec(name="lcram", ip="10.0.2.32/24", kernel="bzimage"),
        ]
    )
    hosts = write_hosts(tmp_path / "hosts.toml", [off, sleeper], poll_interval=0.5, timeout=1.0)
    engine = FleetEngine(load_config(hosts))
    app = QgadashApp(engine, config_label="real guests")

    def agent_cell(vm: str) -> str:
        return app.fleet.table.get_cell(vm, "agent").plain

    def json_agent(vm: str) -> dict[str, object]:
        doc = status_document(engine.store.snapshots(), engine.store.hypervisors())
        agent = next(v["agent"] for v in doc["vms"] if v["id"] == vm)
        assert isinstance(agent, dict)
        return agent

    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: agent_cell(vm_id(off)) == "ok")
        await wait_until(pilot, lambda: agent_cell(vm_id(sleeper)) == "ok")
        await power(pilot, app, vm_id(off), "1")  # power down
        await power(pilot, app, vm_id(sleeper), "4")  # suspend to RAM
        # QEMU's view first: one process ended, the other suspended.
        assert await asyncio.to_thread(off.wait_exit, 60) == 0, off.console_tail()
        await wait_until(pilot, lambda: sleeper.status() == "suspended")
        # The rows stay, saying what was done, not a fault.
        await wait_until(pilot, lambda: agent_cell(vm_id(off)) == "shut off by you")
        await wait_until(pilot, lambda: agent_cell(vm_id(sleeper)) == "suspended (ram)")
        assert len(app.fleet.table.order) == 2
        await wait_until(pilot, lambda: "■ 1 stopped  ◐ 1 suspended" in screen_text(app))
        stopped, suspended = json_agent(vm_id(off)), json_agent(vm_id(sleeper))
        assert stopped["state"] == "stopped" and stopped["action"] == "powerdown"
        assert suspended["state"] == "suspended" and suspended["action"] == "suspend-ram"
        assert isinstance(stopped["since"], str)
        # Woken up: the agent answers again and the row is an ordinary one.
        sleeper.wakeup()
        await wait_until(pilot, lambda: agent_cell(vm_id(sleeper)) == "ok")
        snap = engine.store.get(vm_id(sleeper))
        assert snap is not None and snap.agent is AgentState.OK and snap.lifecycle is None
        assert json_agent(vm_id(sleeper))["state"] == "ok"
        assert agent_cell(vm_id(off)) == "shut off by you"
