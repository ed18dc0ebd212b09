"""The files pane's fixes (issues 13 and 14): never saving over a local file without a
yes, the listing after an upload, what a listing left out, `r` for the folder, follow
on the file under the cursor, a frozen guest, and the details' Files tab."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static

from qgadash.fleet.files import DirEntry, DirListing
from qgadash.fleet.model import FreezeState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.files import FilesScreen, PromptScreen
from qgadash.ui.screens.modals import MessageScreen

from .conftest import SIZE, MakeApp
from .fakes import FakeEngine, agent_info
from .screen import screen_text, wait_until
from .test_files import open_files, seed


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads are offered in the current directory: a fresh one per test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def names_in(screen: FilesScreen) -> list[str]:
    table = screen.query_one("#files-list", DataTable)
    return [table.get_row_at(i)[0].plain for i in range(table.row_count)]


async def listed(app: QgadashApp, pilot: Pilot[Any], screen: FilesScreen, path: str) -> None:
    screen.list_dir(path)
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_save_as_never_offers_an_existing_name_and_asks_before_replacing(
    engine: FakeEngine, make_app: MakeApp, in_tmp: Path
) -> None:
    seed(engine)
    (in_tmp / "messages").write_text("mine\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        await listed(app, pilot, screen, "/var/log")
        table = screen.query_one("#files-list", DataTable)
        table.move_cursor(row=names_in(screen).index("messages"))
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        field = app.screen.query_one("#local", Input)
        assert field.value == str(in_tmp / "messages-1")  # not the file that is there
        # The operator types the existing name anyway: asked, Cancel first, kept.
        field.value = str(in_tmp / "messages")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        assert "exists. Replace it" in screen_text(app)
        assert app.focused is app.screen.query_one("#cancel", Button)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await app.workers.wait_for_complete()
        assert (in_tmp / "messages").read_text() == "mine\n"
        # Again, and Replace: only now is it written over (overwrite asked of the engine).
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#local", Input).value = str(in_tmp / "messages")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: (in_tmp / "messages").read_bytes().startswith(b"Nov"))


async def test_the_listing_is_read_again_after_an_upload(
    engine: FakeEngine, make_app: MakeApp, tmp_path: Path
) -> None:
    seed(engine)
    local = tmp_path / "motd"
    local.write_text("hello\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        await listed(app, pilot, screen, "/etc")
        assert "motd" not in names_in(screen)
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#local", Input).value = str(local)
        await pilot.click("#confirm")
        await wait_until(
            pilot, lambda: isinstance(app.screen, PromptScreen) and not app.screen.query("#local")
        )
        await pilot.click("#confirm")  # "Upload to the guest?"
        await wait_until(pilot, lambda: "motd" in names_in(screen))
        assert engine.files.uploads[-1][1] == "/etc/motd"


async def test_the_pane_says_what_a_listing_left_out(engine: FakeEngine, make_app: MakeApp) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        entries = (DirEntry("a", "file", 1, None), DirEntry("b", "file", 2, None))
        screen.show_listing(
            DirListing("hv1/web-00", "/big", entries, truncated=True, skipped=3, more=1200)
        )
        await pilot.pause()
        text = screen_text(app)
        assert "1200 entries not shown" in text and "3 unreadable entries skipped" in text
        screen.show_listing(DirListing("hv1/web-00", "/ok", entries))
        await pilot.pause()
        assert "not shown" not in screen_text(app) and "skipped" not in screen_text(app)


async def test_r_reads_the_folder_again_not_the_open_file(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        await listed(app, pilot, screen, "/etc")
        screen.view("/etc/hostname")
        await app.workers.wait_for_complete()
        engine.files.tree["hv1/web-00"]["/etc/new.conf"] = b"x\n"
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "new.conf" in names_in(screen)
        assert screen.viewing == "/etc/hostname"


async def test_follow_takes_the_file_under_the_cursor_not_one_opened_elsewhere(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        await listed(app, pilot, screen, "/etc")
        screen.view("/etc/hostname")
        await app.workers.wait_for_complete()
        await listed(app, pilot, screen, "/var/log")
        screen.query_one("#files-list", DataTable).move_cursor(row=0)  # ../
        await pilot.press("f")
        await pilot.pause()
        assert not screen.following  # /etc/hostname was opened in another folder
        table = screen.query_one("#files-list", DataTable)
        table.move_cursor(row=names_in(screen).index("messages"))
        await pilot.press("f")
        await wait_until(pilot, lambda: screen.following)
        assert screen.viewing == "/var/log/messages"
        await pilot.press("f")


async def test_a_frozen_guest_offers_no_open_by_path(engine: FakeEngine, make_app: MakeApp) -> None:
    seed(engine)
    snap = engine.store.get("hv1/web-00")
    assert snap is not None
    facts = dataclasses.replace(
        snap.facts,
        info=agent_info(disabled=("guest-exec", "guest-exec-status", "guest-file-open")),
    )
    engine.store.put(dataclasses.replace(snap, facts=facts, freeze=FreezeState.FROZEN))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        text = str(screen.query_one("#files-reason", Static).content)
        assert "the guest is frozen: its files cannot be opened until it is thawed" in text
        assert "open a file by its path" not in text
        assert not screen.query_one("#files-path", Input).display
        await pilot.press("o")
        await pilot.pause()
        assert app.focused is not screen.query_one("#files-path", Input)


async def test_the_files_tab_never_takes_the_next_key_as_text(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.table.move_to("hv3/web-05")  # no listing: the path field is shown
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
        await wait_until(
            pilot,
            lambda: details.query_one("TabbedContent").active == "agent",  # type: ignore[attr-defined]
        )
