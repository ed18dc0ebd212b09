"""The files pane (b): listing, open by path, viewer, follow, download, upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Log

from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.files import VIEW_CAP, FilesScreen, PromptScreen

from .conftest import SIZE, MakeApp, MakeEngine
from .fakes import FakeEngine
from .screen import screen_text, wait_until

LOG = b"".join(b"Nov 25 12:%02d:00 web-00 systemd[1]: line %d\n" % (i % 60, i) for i in range(300))


def seed(engine: FakeEngine) -> None:
    engine.files.tree["hv1/web-00"] = {
        "/var/log/messages": LOG,
        "/var/log/audit/audit.log": b"type=LOGIN msg=audit(1)\n",
        "/var/log/evil[bold]\x1b[31m.log": b"x\n",
        "/bin/true": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4,
        "/srv/big.txt": b"0123456789abcde\n" * (3 * VIEW_CAP // 16),
        "/etc/hostname": b"web-00\n",
    }
    engine.files.tree["hv3/web-05"] = {"C:\\Windows\\win.ini": b"[fonts]\r\n"}


async def open_files(app: QgadashApp, pilot: Pilot[Any], vm: str) -> FilesScreen:
    app.fleet.table.move_to(vm)
    await pilot.press("b")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, FilesScreen)
    return screen


def log_text(screen: FilesScreen) -> list[str]:
    return list(screen.query_one("#viewer", Log).lines)


async def test_listing_and_viewing_a_text_file(engine: FakeEngine, make_app: MakeApp) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        table = screen.query_one("#files-list", DataTable)
        names = [table.get_row_at(i)[0].plain for i in range(table.row_count)]
        assert names[:4] == ["../", "bin/", "etc/", "srv/"]
        assert "(listed via guest-exec)" in screen_text(app)
        screen.list_dir("/var/log")
        await app.workers.wait_for_complete()
        await pilot.pause()
        names = [table.get_row_at(i)[0].plain for i in range(table.row_count)]
        assert "audit/" in names and "messages" in names
        assert "evil[bold]␛[31m.log" in names
        table.move_cursor(row=names.index("messages"))
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        lines = log_text(screen)
        assert lines[0] == "Nov 25 12:00:00 web-00 systemd[1]: line 0"
        assert len(lines) == 300
        await pilot.press("backspace")
        await app.workers.wait_for_complete()
        assert screen.cwd == "/var"


async def test_binary_files_are_shown_as_hex(engine: FakeEngine, make_app: MakeApp) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        screen.view("/bin/true")
        await app.workers.wait_for_complete()
        await pilot.pause()
        lines = log_text(screen)
        assert lines[0].startswith("binary file")
        assert lines[1].startswith("00000000  7f 45 4c 46")
        assert "binary" in screen_text(app)


async def test_large_files_stop_at_the_cap_and_read_more_on_request(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        screen.view("/srv/big.txt")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.view_offset == VIEW_CAP and not screen.view_eof
        assert "first 1.05 MB of 3.15 MB" in screen_text(app)
        await pilot.press("m")
        await app.workers.wait_for_complete()
        assert screen.view_offset == 2 * VIEW_CAP


async def test_follow_mode_appends_what_grows(engine: FakeEngine, make_app: MakeApp) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        screen.view("/var/log/messages")
        await app.workers.wait_for_complete()
        await pilot.press("f")
        await wait_until(pilot, lambda: bool(log_text(screen)))
        assert screen.following
        assert log_text(screen)[-1].endswith("line 299")
        files = engine.files.tree["hv1/web-00"]
        files["/var/log/messages"] += b"a new line\npartial"
        await wait_until(pilot, lambda: log_text(screen)[-1] == "a new line")
        files["/var/log/messages"] += b" line done\n"
        await wait_until(pilot, lambda: log_text(screen)[-1] == "partial line done")
        assert "following" in screen_text(app)
        await pilot.press("f")
        await pilot.pause()
        assert not screen.following


async def test_no_listing_offers_open_by_path_and_says_why(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv3/web-05")  # Windows, guest-exec disabled
        text = screen_text(app)
        assert "No listing: guest-exec is disabled by the guest's policy" in text
        path = screen.query_one("#files-path", Input)
        assert app.focused is not path  # the next key is not typed into it
        await pilot.press("o")
        await wait_until(pilot, lambda: app.focused is path)
        path.value = "C:\\Windows\\win.ini"
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert log_text(screen) == ["[fonts]"]


async def test_download_writes_the_local_file(
    engine: FakeEngine, make_app: MakeApp, tmp_path: Path
) -> None:
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        screen.view("/var/log/messages")
        await app.workers.wait_for_complete()
        await pilot.press("d")
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        target = tmp_path / "messages.txt"
        prompt.query_one("#local", Input).value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert target.read_bytes() == LOG


async def test_upload_is_confirmed_with_cancel_first(
    engine: FakeEngine, make_app: MakeApp, tmp_path: Path
) -> None:
    seed(engine)
    local = tmp_path / "motd"
    local.write_bytes(b"hello\n")
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_files(app, pilot, "hv1/web-00")
        screen.list_dir("/etc")
        await app.workers.wait_for_complete()
        await pilot.press("u")
        await pilot.pause()
        prompt = app.screen
        prompt.query_one("#local", Input).value = str(local)
        assert prompt.query_one("#remote", Input).value == "/etc/"
        await pilot.click("#confirm")
        await pilot.pause()
        confirm = app.screen
        assert isinstance(confirm, PromptScreen)
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        assert "/etc/motd" in screen_text(app)
        await pilot.press("enter")  # Cancel
        await pilot.pause()
        assert engine.files.uploads == []
        await pilot.press("u")
        await pilot.pause()
        app.screen.query_one("#local", Input).value = str(local)
        await pilot.click("#confirm")
        await pilot.pause()
        await pilot.click("#confirm")
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert engine.files.uploads == [("hv1/web-00", "/etc/motd", b"hello\n")]


async def test_read_only_has_no_upload(make_engine: MakeEngine, make_app: MakeApp) -> None:
    engine = make_engine(read_only=True)
    seed(engine)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_files(app, pilot, "hv1/web-00")
        footer = screen_text(app).splitlines()[-1]
        assert "Upload" not in footer and "Download" in footer
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, FilesScreen)
