"""The dashboard drives two real guests once: mark, freeze, countdown, thaw (issue 5, item 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import ActionResult, AgentState, FreezeState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.modals import ActionRunScreen, ConfirmActionScreen
from tests.guests.product import ensure_thawed, guest_freeze_status, vm_id, write_hosts
from tests.guests.vm import Guest
from tests.ui.screen import screen_text

pytestmark = pytest.mark.guest
SIZE = (160, 50)


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 20.0
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await pilot.pause(0.05)


async def confirm_and_run(
    pilot: Any, app: QgadashApp, key: str, thaw_after: str | None = None
) -> list[ActionResult]:
    """Press `key`, check the dialog defaults to Cancel, confirm, and wait for the outcomes."""
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
    assert isinstance(app.focused, Button) and app.focused.id == "cancel"
    if thaw_after is not None:
        app.screen.query_one("#thaw-after", Input).value = thaw_after
    await pilot.click("#confirm")
    await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
    run = app.screen
    assert isinstance(run, ActionRunScreen)
    await wait_until(pilot, lambda: run.finished)
    await pilot.press("escape")
    return list(run.results)


async def test_mark_freeze_countdown_and_thaw_two_real_guests(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    ids = [vm_id(g) for g in shared_guests]
    hosts = write_hosts(tmp_path / "hosts.toml", shared_guests, poll_interval=0.5, timeout=3.0)
    engine = FleetEngine(load_config(hosts))
    app = QgadashApp(engine, config_label="real guests")
    try:
        async with app.run_test(size=SIZE) as pilot:
            table = app.fleet.table

            def ready() -> bool:
                snaps = [engine.store.get(i) for i in ids]
                return all(
                    s is not None and s.agent is AgentState.OK and s.facts.info for s in snaps
                )

            await wait_until(pilot, ready)
            # Mark both rows with the keyboard, as an operator would.
            for vm in ids:
                table.move_to(vm)
                await pilot.press("space")
            await pilot.press("f")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
            assert "Will freeze 2 VMs" in screen_text(app)
            await pilot.press("escape")  # Cancel first: nothing happens
            await wait_until(pilot, lambda: app.screen is app.fleet)  # no run screen either
            assert engine.frozen_by_us() == []
            for guest in shared_guests:  # nothing reached the guests
                assert await asyncio.to_thread(guest_freeze_status, guest) == "thawed"
            results = await confirm_and_run(pilot, app, "f", thaw_after="600")
            assert [r.ok for r in results] == [True, True], results

            # The table shows each guest frozen, with the countdown to its thaw deadline.
            def fs_cell(vm: str) -> str:
                return table.get_cell(vm, "fs").plain

            for vm in ids:
                await wait_until(pilot, partial(lambda vm: fs_cell(vm).startswith("❄ "), vm))
                assert ":" in table.get_cell(vm, "fs").plain  # m:ss left
            assert sorted(engine.frozen_by_us()) == sorted(ids)
            for guest in shared_guests:  # really frozen, by the guest's own agent
                assert await asyncio.to_thread(guest_freeze_status, guest) == "frozen"
            # Thaw from the dashboard: `t` on the marked rows, confirmed.
            results = await confirm_and_run(pilot, app, "t")
            assert [r.ok for r in results] == [True, True], results
            for vm in ids:
                await wait_until(pilot, partial(lambda vm: fs_cell(vm) == "thawed", vm))
                snap = engine.store.get(vm)
                assert snap is not None and snap.freeze is FreezeState.THAWED
            assert engine.frozen_by_us() == []
    finally:
        await engine.stop()
        for guest in shared_guests:
            ensure_thawed(guest)
    # The guests agree, by their own agents' word.
    assert [guest_freeze_status(g) for g in shared_guests] == ["thawed", "thawed"]
