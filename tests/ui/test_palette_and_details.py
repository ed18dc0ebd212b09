"""The command palette's context actions, and the detail tabs kept live."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import TabbedContent

from qgadash.ui.app import QgadashApp
from qgadash.ui.commands import palette_entries
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.files import FilesScreen
from qgadash.ui.screens.modals import ConfirmActionScreen

from .conftest import SIZE, MakeApp, MakeSimRig, linux_vms
from .fakes import FakeEngine
from .screen import screen_text, wait_until


async def test_palette_offers_context_actions(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_marks({s.id for s in engine.store.snapshots()[:12]})
        app.fleet.table.move_to("hv1/web-00")
        await pilot.pause()
        names = [e.name for e in palette_entries(app)]
        assert "Freeze 12 marked VMs" in names
        assert "Thaw 12 marked VMs" in names
        assert any(n.startswith("Thaw all frozen (") for n in names)
        assert "Open files of hv1/web-00" in names
        assert "Details of hv1/web-00" in names


async def test_palette_runs_an_action_through_its_confirmation(make_sim_rig: MakeSimRig) -> None:
    rig = await make_sim_rig(linux_vms("web-00", "db-01"))
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        app.fleet.set_marks({"sim/web-00", "sim/db-01"})
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        for ch in "freeze 2 marked":
            await pilot.press("space" if ch == " " else ch)
        await wait_until(pilot, lambda: "Freeze 2 marked VMs" in screen_text(app))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        await wait_until(pilot, lambda: app.focused is not None)
        assert app.focused is not None and app.focused.id == "cancel"
        await pilot.press("enter")  # Cancel: nothing is frozen
        await wait_until(pilot, lambda: app.screen is app.fleet)
        await app.workers.wait_for_complete()
        assert not rig.agent("sim/web-00").frozen and not rig.agent("sim/db-01").frozen
        assert rig.engine.frozen_by_us() == []


async def test_palette_jumps_to_a_vm_and_opens_files(make_sim_rig: MakeSimRig) -> None:
    rig = await make_sim_rig(linux_vms("web-00", "db-01"))
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        app.jump_to("sim/db-01")
        await wait_until(pilot, lambda: app.fleet.table.cursor_vm == "sim/db-01")
        entry = next(e for e in palette_entries(app) if e.name == "Open files of sim/db-01")
        entry.run()
        await wait_until(pilot, lambda: isinstance(app.screen, FilesScreen))
        assert isinstance(app.screen, FilesScreen) and app.screen.vm_id == "sim/db-01"


async def test_details_follow_the_store(make_sim_rig: MakeSimRig) -> None:
    """The details of a VM change as the engine learns: a freeze, the NIC rates that
    two polls' counters give."""
    vms = linux_vms("web-00")
    rig = await make_sim_rig(vms)
    hostname = vms[0].profile.hostname
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        app.fleet.table.move_to("sim/web-00")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await wait_until(pilot, lambda: f"Hostname     {hostname}" in screen_text(app))
        results = await rig.engine.freeze(["sim/web-00"], thaw_after=120)
        assert all(r.ok for r in results), results
        await wait_until(pilot, lambda: "❄ frozen by this session" in screen_text(app))
        await pilot.press("2")
        nic = vms[0].profile.interfaces[-1]
        await wait_until(pilot, lambda: f"{nic.name}  {nic.mac}" in screen_text(app))
        await wait_until(pilot, lambda: "B/s" in screen_text(app), timeout=30)
        await pilot.press("5")
        await wait_until(pilot, lambda: "✓ guest-fsfreeze-thaw" in screen_text(app))
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.fleet)


async def test_the_files_tab_opens_the_file_browser_and_comes_back(
    make_sim_rig: MakeSimRig,
) -> None:
    vms = linux_vms("web-00")
    rig = await make_sim_rig(vms)
    nic = vms[0].profile.interfaces[-1]
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        app.fleet.table.move_to("sim/web-00")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        details = app.screen
        await pilot.press("2")
        await wait_until(pilot, lambda: details.query_one(TabbedContent).active == "network")
        await pilot.press("4")
        await wait_until(pilot, lambda: isinstance(app.screen, FilesScreen))
        assert isinstance(app.screen, FilesScreen) and app.screen.vm_id == "sim/web-00"
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is details)
        # Back on the tab that was open, not on an empty Files tab.
        assert details.query_one(TabbedContent).active == "network"
        await wait_until(pilot, lambda: f"{nic.name}  {nic.mac}" in screen_text(app))


async def test_theme_switch_recolours_the_table(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        before = app.fleet.table.get_cell("hv1/web-00", "agent").style
        app.theme = "qgadash-light"
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("hv1/web-00", "agent").style != before
        )
        assert app.palette.ok.color is not None and app.palette.ok.color.triplet is not None
        assert app.palette.ok.color.triplet.hex.lower() == "#1a7f37"


async def test_unknown_theme_falls_back_and_says_so(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine, theme="no-such-theme")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "qgadash-dark"
        assert any("no-such-theme" in n.message for n in app._notifications)


async def test_user_theme_from_the_config_folder(
    engine: FakeEngine, make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cfg" / "qgadash" / "themes"
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text(
        'name = "mine"\nprimary = "#ff00ff"\n[variables]\nfrozen = "#00ff00"\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    app = make_app(engine, theme="mine")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "mine"
        frozen = app.palette.frozen.color
        assert frozen is not None and frozen.triplet is not None
        assert frozen.triplet.hex.lower() == "#00ff00"


async def test_a_tab_chosen_while_the_details_open_is_kept(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    """Textual's tabs settle on their first tab by a message after mount: a tab chosen
    before that (a key pressed as the screen opens) must not be undone by it."""
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        details = DetailScreen("hv1/web-00")
        mounting = app.push_screen(details)
        details.action_tab("storage")  # before its tabs exist
        await mounting
        tabs = details.query_one(TabbedContent)
        await wait_until(pilot, lambda: tabs.active == "storage")
        await pilot.pause(0.2)
        assert tabs.active == "storage"
        assert "/data" in screen_text(app)
