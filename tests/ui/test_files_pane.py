"""The files pane's fixes (issues 13 and 14): never saving over a local file without a
yes, the listing after an upload, what a listing left out, `r` for the folder, follow
on the file under the cursor, a frozen guest, and the details' Files tab; on the real
engine with simulated guests (test_files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static, TabbedContent

from qgadash.fleet.files import DirEntry, DirListing
from qgadash.fleet.model import FreezeState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.files import FilesScreen, PromptScreen
from qgadash.ui.screens.modals import MessageScreen

from .conftest import SIZE, MakeSimRig, snapshot_of
from .screen import screen_text, wait_until
from .test_files import (
    LINUX,
    LOG,
    WINDOWS,
    answering,
    append_in_guest,
    names_in,
    open_files,
    read_in_guest,
    seeded,
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads are offered in the current directory: a fresh one per test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def listed(pilot: Pilot[Any], screen: FilesScreen, path: str, name: str) -> None:
    """List `path` and wait until its listing, which holds `name`, is shown."""
    screen.list_dir(path)
    await wait_until(pilot, lambda: screen.cwd == path and name in names_in(screen))


async def test_save_as_never_offers_an_existing_name_and_asks_before_replacing(
    make_sim_rig: MakeSimRig, in_tmp: Path
) -> None:
    rig = await seeded(make_sim_rig)
    (in_tmp / "app.log").write_text("mine\n")
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        await listed(pilot, screen, "/var/log", "app.log")
        table = screen.query_one("#files-list", DataTable)
        table.move_cursor(row=names_in(screen).index("app.log"))
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        field = app.screen.query_one("#local", Input)
        assert field.value == str(in_tmp / "app-1.log")  # not the file that is there
        # The operator types the existing name anyway: asked, Cancel first, kept.
        field.value = str(in_tmp / "app.log")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        assert "exists. Replace it" in screen_text(app)
        assert app.focused is app.screen.query_one("#cancel", Button)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await app.workers.wait_for_complete()
        assert (in_tmp / "app.log").read_text() == "mine\n"
        # Again, and Replace: only now is it written over (overwrite asked of the engine).
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#local", Input).value = str(in_tmp / "app.log")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: (in_tmp / "app.log").read_bytes() == LOG)


async def test_the_listing_is_read_again_after_an_upload(
    make_sim_rig: MakeSimRig, tmp_path: Path
) -> None:
    rig = await seeded(make_sim_rig)
    local = tmp_path / "greeting"
    local.write_text("hello\n")
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        await listed(pilot, screen, "/etc", "motd")
        assert "greeting" not in names_in(screen)
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#local", Input).value = str(local)
        await pilot.click("#confirm")
        await wait_until(
            pilot, lambda: isinstance(app.screen, PromptScreen) and not app.screen.query("#local")
        )
        await pilot.click("#confirm")  # "Upload to the guest?"
        await wait_until(pilot, lambda: "greeting" in names_in(screen))
        assert await read_in_guest(rig, LINUX, "/etc/greeting") == b"hello\n"


async def test_the_pane_says_what_a_listing_left_out(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        entries = (DirEntry("a", "file", 1, None), DirEntry("b", "file", 2, None))
        screen.show_listing(
            DirListing(LINUX, "/big", entries, truncated=True, skipped=3, more=1200)
        )
        await wait_until(pilot, lambda: "1200 entries not shown" in screen_text(app))
        assert "3 unreadable entries skipped" in screen_text(app)
        screen.show_listing(DirListing(LINUX, "/ok", entries))
        await wait_until(pilot, lambda: "not shown" not in screen_text(app))
        assert "skipped" not in screen_text(app)


async def test_r_reads_the_folder_again_not_the_open_file(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        await listed(pilot, screen, "/etc", "hostname")
        screen.view("/etc/hostname")
        await wait_until(pilot, lambda: screen.viewing == "/etc/hostname")
        await app.workers.wait_for_complete()
        await append_in_guest(rig, LINUX, "/etc/new.conf", b"x\n")
        await pilot.press("r")
        await wait_until(pilot, lambda: "new.conf" in names_in(screen))
        assert screen.viewing == "/etc/hostname"


async def test_follow_takes_the_file_under_the_cursor_not_one_opened_elsewhere(
    make_sim_rig: MakeSimRig,
) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        await listed(pilot, screen, "/etc", "hostname")
        screen.view("/etc/hostname")
        await wait_until(pilot, lambda: screen.viewing == "/etc/hostname")
        await app.workers.wait_for_complete()
        await listed(pilot, screen, "/var/log", "app.log")
        screen.query_one("#files-list", DataTable).move_cursor(row=0)  # ../
        await pilot.press("f")
        await pilot.pause()
        assert not screen.following  # /etc/hostname was opened in another folder
        table = screen.query_one("#files-list", DataTable)
        table.move_cursor(row=names_in(screen).index("app.log"))
        await pilot.press("f")
        await wait_until(pilot, lambda: screen.following)
        assert screen.viewing == "/var/log/app.log"
        await pilot.press("f")


async def test_a_frozen_guest_offers_no_open_by_path(make_sim_rig: MakeSimRig) -> None:
    """Frozen, the agent refuses guest-exec and guest-file-open: no listing, and no path
    field either (it could open nothing)."""
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        results = await rig.engine.freeze([LINUX], thaw_after=120)
        assert all(r.ok for r in results), results

        def frozen_and_known() -> bool:
            snap = snapshot_of(rig.engine.store, LINUX)
            info = snap.facts.info
            return (
                snap.freeze is FreezeState.FROZEN
                and info is not None
                and not info.enabled("guest-file-open")
            )

        await wait_until(pilot, frozen_and_known, timeout=30)  # a poll re-reads guest-info
        screen = await open_files(app, pilot, LINUX)
        text = str(screen.query_one("#files-reason", Static).content)
        assert "the guest is frozen: its files cannot be opened until it is thawed" in text
        assert "open a file by its path" not in text
        assert not screen.query_one("#files-path", Input).display
        await pilot.press("o")
        await pilot.pause()
        assert app.focused is not screen.query_one("#files-path", Input)


async def test_the_files_tab_never_takes_the_next_key_as_text(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        app.fleet.table.move_to(WINDOWS)  # no listing: the path field is shown
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        details = app.screen
        await pilot.pause()
        await pilot.press("4")
        await wait_until(pilot, lambda: isinstance(app.screen, FilesScreen))
        await pilot.press("5")  # the next tab, as an operator walks the tabs
        await wait_until(pilot, lambda: app.screen is details)
        path = details.query("#files-path")
        assert not path  # nothing typed anywhere
        await wait_until(pilot, lambda: details.query_one(TabbedContent).active == "agent")
