"""The files pane (b): listing, open by path, viewer, follow, download, upload; on the
real engine, whose file verbs run on simulated guests' agents (guest-exec listings,
guest-file-* reads and writes)."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Log

from qgadash.agent.client import AgentCaller
from qgadash.sim import SimVm, make_profile
from qgadash.sim.profiles import GuestFile
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.files import VIEW_CAP, FilesScreen, PromptScreen

from .conftest import SIZE, MakeSimRig, SimRig
from .screen import screen_text, wait_until

LOG = b"".join(b"Nov 25 12:%02d:00 web-00 systemd[1]: line %d\n" % (i % 60, i) for i in range(300))
LINUX = "sim/web-00"
WINDOWS = "sim/win-09"  # guest-exec disabled by its policy, as Windows guests ship
MOTD = "/etc/motd"

# What the tests read, beside each simulated distribution's own tree.
SEEDED = (
    GuestFile("/bin", None, 0o755),
    GuestFile("/srv", None, 0o755),
    GuestFile("/var/log/audit", None, 0o755),
    GuestFile("/var/log/app.log", LOG),
    GuestFile("/var/log/audit/audit.log", b"type=LOGIN msg=audit(1)\n"),
    GuestFile("/var/log/evil[bold]\x1b[31m.log", b"x\n"),
    GuestFile("/bin/true", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, 0o755),
    GuestFile("/srv/big.txt", b"0123456789abcde\n" * (3 * VIEW_CAP // 16)),
)


def seeded_vms() -> list[SimVm]:
    linux = make_profile(0)
    windows = make_profile(9)
    assert not linux.windows and windows.windows
    assert "guest-exec" in windows.disabled_commands
    return [
        SimVm("web-00", dataclasses.replace(linux, files=linux.files + SEEDED)),
        SimVm("win-09", windows),
    ]


async def seeded(make_sim_rig: MakeSimRig, **settings: Any) -> SimRig:
    return await make_sim_rig(seeded_vms(), **settings)


async def answering(pilot: Pilot[Any], rig: SimRig) -> None:
    """Both guests polled and answering (the files pane asks the store what they offer)."""
    await wait_until(pilot, rig.answering, timeout=30)


async def append_in_guest(rig: SimRig, vm_id: str, path: str, data: bytes) -> None:
    """Append to a guest's file through its agent (guest-file-open in mode "a")."""

    async def append(caller: AgentCaller) -> None:
        handle = await caller.call("guest-file-open", {"path": path, "mode": "a"}, timeout=3)
        buf = base64.b64encode(data).decode()
        await caller.call("guest-file-write", {"handle": handle, "buf-b64": buf}, timeout=3)
        await caller.call("guest-file-close", {"handle": handle}, timeout=3)

    await rig.engine.with_agent(vm_id, append)


async def read_in_guest(rig: SimRig, vm_id: str, path: str) -> bytes:
    return (await rig.engine.files.read(vm_id, path)).data


async def open_files(app: QgadashApp, pilot: Pilot[Any], vm: str) -> FilesScreen:
    app.fleet.table.move_to(vm)
    await pilot.press("b")
    await wait_until(pilot, lambda: isinstance(app.screen, FilesScreen))
    screen = app.screen
    assert isinstance(screen, FilesScreen)
    await app.workers.wait_for_complete()  # its first listing (or why there is none)
    await pilot.pause()
    return screen


def names_in(screen: FilesScreen) -> list[str]:
    table = screen.query_one("#files-list", DataTable)
    return [table.get_row_at(i)[0].plain for i in range(table.row_count)]


def log_text(screen: FilesScreen) -> list[str]:
    return list(screen.query_one("#viewer", Log).lines)


async def test_listing_and_viewing_a_text_file(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        await wait_until(pilot, lambda: len(names_in(screen)) > 1)
        names = names_in(screen)
        assert names[0] == "../" and {"bin/", "etc/", "srv/"} <= set(names)
        dirs = [n for n in names[1:] if n.endswith("/")]
        assert names[1 : 1 + len(dirs)] == sorted(dirs)  # folders first, by name
        assert "(listed via guest-exec)" in screen_text(app)
        screen.list_dir("/var/log")
        await wait_until(pilot, lambda: "app.log" in names_in(screen))
        names = names_in(screen)
        assert "audit/" in names
        assert "evil[bold]␛[31m.log" in names
        table = screen.query_one("#files-list", DataTable)
        table.move_cursor(row=names.index("app.log"))
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(log_text(screen)) == 300)
        assert log_text(screen)[0] == "Nov 25 12:00:00 web-00 systemd[1]: line 0"
        await pilot.press("backspace")
        await wait_until(pilot, lambda: screen.cwd == "/var")


async def test_binary_files_are_shown_as_hex(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        screen.view("/bin/true")
        await wait_until(pilot, lambda: len(log_text(screen)) > 1)
        lines = log_text(screen)
        assert lines[0].startswith("binary file")
        assert lines[1].startswith("00000000  7f 45 4c 46")
        assert "binary" in screen_text(app)


async def test_large_files_stop_at_the_cap_and_read_more_on_request(
    make_sim_rig: MakeSimRig,
) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        screen.view("/srv/big.txt")
        await wait_until(pilot, lambda: screen.view_offset == VIEW_CAP, timeout=30)
        assert not screen.view_eof
        await wait_until(pilot, lambda: "first 1.05 MB of 3.15 MB" in screen_text(app))
        await pilot.press("m")
        await wait_until(pilot, lambda: screen.view_offset == 2 * VIEW_CAP, timeout=30)


async def test_follow_mode_appends_what_grows(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        screen.view("/var/log/app.log")
        await wait_until(pilot, lambda: len(log_text(screen)) == 300)
        await pilot.press("f")
        await wait_until(pilot, lambda: screen.following)
        assert log_text(screen)[-1].endswith("line 299")
        await append_in_guest(rig, LINUX, "/var/log/app.log", b"a new line\npartial")
        await wait_until(pilot, lambda: log_text(screen)[-1] == "a new line")
        await append_in_guest(rig, LINUX, "/var/log/app.log", b" line done\n")
        await wait_until(pilot, lambda: log_text(screen)[-1] == "partial line done")
        assert "following" in screen_text(app)
        await pilot.press("f")
        await wait_until(pilot, lambda: not screen.following)


async def test_no_listing_offers_open_by_path_and_says_why(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, WINDOWS)
        text = screen_text(app)
        assert "No listing: guest-exec is disabled by the guest's policy" in text
        path = screen.query_one("#files-path", Input)
        assert app.focused is not path  # the next key is not typed into it
        await pilot.press("o")
        await wait_until(pilot, lambda: app.focused is path)
        path.value = "C:\\Windows\\win.ini"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "[fonts]" in log_text(screen))


async def test_download_writes_the_local_file(make_sim_rig: MakeSimRig, tmp_path: Path) -> None:
    rig = await seeded(make_sim_rig)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        screen = await open_files(app, pilot, LINUX)
        screen.view("/var/log/app.log")
        await wait_until(pilot, lambda: len(log_text(screen)) == 300)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        target = tmp_path / "app.txt"
        app.screen.query_one("#local", Input).value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, lambda: target.exists() and target.read_bytes() == LOG)


async def test_upload_is_confirmed_with_cancel_first(
    make_sim_rig: MakeSimRig, tmp_path: Path
) -> None:
    rig = await seeded(make_sim_rig)
    local = tmp_path / "motd"
    local.write_bytes(b"hello\n")
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        before = await read_in_guest(rig, LINUX, MOTD)
        assert before != b"hello\n"
        screen = await open_files(app, pilot, LINUX)
        screen.list_dir("/etc")
        await wait_until(pilot, lambda: "motd" in names_in(screen))
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        prompt = app.screen
        prompt.query_one("#local", Input).value = str(local)
        assert prompt.query_one("#remote", Input).value == "/etc/"
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: app.screen is not prompt)
        assert isinstance(app.screen, PromptScreen)
        await wait_until(pilot, lambda: isinstance(app.focused, Button))
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        assert MOTD in screen_text(app)
        await pilot.press("enter")  # Cancel
        await wait_until(pilot, lambda: app.screen is screen)
        assert await read_in_guest(rig, LINUX, MOTD) == before
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        again = app.screen
        again.query_one("#local", Input).value = str(local)
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: app.screen is not again)
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: app.screen is screen)
        await app.workers.wait_for_complete()
        assert await read_in_guest(rig, LINUX, MOTD) == b"hello\n"


async def test_read_only_has_no_upload(make_sim_rig: MakeSimRig) -> None:
    rig = await seeded(make_sim_rig, read_only=True)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await answering(pilot, rig)
        await open_files(app, pilot, LINUX)
        footer = screen_text(app).splitlines()[-1]
        assert "Upload" not in footer and "Download" in footer
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, FilesScreen)
