"""Snapshots (pytest-textual-snapshot) of every screen, on a fixed fleet and a fixed clock.

Update after an intended change with `pytest tests/ui/test_snapshots.py --snapshot-update`
and look at the SVGs before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.modals import ConfirmActionScreen, PowerScreen
from qgadash.ui.themes import SHIPPED_THEME_DIR, load_theme_file

from .conftest import SIZE, SnapCompare
from .fakes import NOW, FakeClock, FakeEngine, mixed_fleet
from .screen import wait_until


def dashboard(pilot: Pilot[Any]) -> QgadashApp:
    """The app a snapshot's `run_before` drives (the plugin types it as any App)."""
    assert isinstance(pilot.app, QgadashApp)
    return pilot.app


async def keys_reach_the_table(pilot: Pilot[Any]) -> None:
    """Wait until a key pressed now goes to the fleet table (issue 19: under load on
    Python 3.13 a key meant for the table once landed in the filter)."""
    app = dashboard(pilot)
    await wait_until(pilot, lambda: app.screen is app.fleet and app.focused is app.fleet.table)


SHIPPED_THEMES = sorted(load_theme_file(p).name for p in SHIPPED_THEME_DIR.glob("*.toml"))


def fixed_app(theme: str | None = None, **settings: Any) -> QgadashApp:
    import dataclasses

    from qgadash.fleet.config import Settings

    snaps, hvs = mixed_fleet(24)
    clock = FakeClock(NOW)
    engine = FakeEngine(
        snaps, hvs, settings=dataclasses.replace(Settings(), **settings), clock=clock
    )
    engine.record_nic(
        "hv1/db-09",
        [(100.0 + 5 * i, 1_000_000 * i * i, 40_000 * i) for i in range(12)],
    )
    app = QgadashApp(engine, config_label="hosts.toml", theme=theme, clock=clock)
    app.animation_level = "none"  # the tab underline slides otherwise
    return app


def lifecycle_app() -> QgadashApp:
    """The fixed fleet, plus a VM this session shut down and one it suspended."""
    import dataclasses

    from qgadash.fleet.model import AgentState, Lifecycle

    app = fixed_app()
    store = app.engine.store
    for vm_id, state, action in (
        ("hv2/web-10", AgentState.STOPPED, "powerdown"),
        ("hv1/web-22", AgentState.SUSPENDED, "suspend-ram"),
    ):
        snap = store.get(vm_id)
        assert snap is not None
        store.put(
            dataclasses.replace(snap, agent=state, lifecycle=Lifecycle(action, NOW - 30, gone=True))
        )
    return app


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (300, 80)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fleet_screen_at_terminal_size(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    assert snap_compare(lifecycle_app(), terminal_size=size)


def test_fleet_screen_24_mixed_vms(snap_compare: SnapCompare) -> None:
    assert snap_compare(fixed_app(), terminal_size=SIZE)


def test_fleet_screen_with_marks_filter_and_sort(snap_compare: SnapCompare) -> None:
    async def setup(pilot: Pilot[Any]) -> None:
        app = dashboard(pilot)
        await pilot.pause()
        app.fleet.set_marks({"hv1/web-00", "hv2/db-04", "hv3/web-05"})
        app.fleet.set_filter("tag:prod")
        app.fleet.sort_by("full", True)
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=setup)


@pytest.mark.parametrize("tab", ["overview", "network", "storage", "agent"])
def test_detail_tabs(snap_compare: SnapCompare, tab: str) -> None:
    async def setup(pilot: Pilot[Any]) -> None:
        dashboard(pilot).fleet.table.move_to("hv1/db-09")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DetailScreen)
        pilot.app.screen.action_tab(tab)
        await pilot.pause()
        await pilot.pause(0.1)  # the pane's scrollbar settles after the first layout

    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=setup)


def test_freeze_confirmation_modal(snap_compare: SnapCompare) -> None:
    async def setup(pilot: Pilot[Any]) -> None:
        app = dashboard(pilot)
        assert isinstance(app.engine, FakeEngine)
        app.engine.no_keeper["hv2/db-16"] = "hv2: no thaw keeper possible: no systemd-run, no nohup"
        app.fleet.set_marks({"hv1/web-00", "hv2/web-01", "hv2/db-04", "hv1/web-03", "hv2/db-16"})
        await keys_reach_the_table(pilot)
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        dialog = app.screen
        assert isinstance(dialog, ConfirmActionScreen)
        await wait_until(pilot, lambda: dialog.keeper_answers is not None)
        await wait_until(pilot, lambda: not dialog.query_one("#confirm", Button).disabled)
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=setup)


def test_power_modal(snap_compare: SnapCompare) -> None:
    async def setup(pilot: Pilot[Any]) -> None:
        app = dashboard(pilot)
        app.fleet.set_marks({"hv1/web-00", "hv2/web-01", "hv3/web-05"})
        await keys_reach_the_table(pilot)
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await wait_until(pilot, lambda: isinstance(app.focused, Button))  # Cancel
        await pilot.pause()

    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=setup)


def test_read_only_fleet_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(fixed_app(read_only=True), terminal_size=SIZE)


@pytest.mark.parametrize("theme", SHIPPED_THEMES)
def test_fleet_screen_in_every_shipped_theme(snap_compare: SnapCompare, theme: str) -> None:
    assert snap_compare(fixed_app(theme=theme), terminal_size=SIZE)
