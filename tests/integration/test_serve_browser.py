"""`qgadash serve` in a real browser: Debian's headless Chromium loads the page with the
token, the fleet appears, a key press filters; without the token, or with a wrong one,
the page and its websocket answer 403. One session at a time, --read-only reaches the
session's dashboard, and stopping serve quits every session's dashboard; a stop signal
to serve reaches each session's dashboard, whose thaw is on record as that signal.

One simulated fleet, one `qgadash serve` and one Chromium for the module; tests that
need a serve of their own (read-only, stopped) start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from qgadash.cli.serve import is_loopback
from tests.integration.chromium import Chromium, Page, require_chromium
from tests.integration.processes import Process, SimProcess, free_port, qgadash, wait_for_port
from tests.integration.sshd import descendants

COUNT = 6
DRAWN = 60.0  # seconds for a session's dashboard to start and show every VM (busy machine)


class Served:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port
        line = process.wait_for("qgadash serve: open ", 60)
        self.url = line.split("open ", 1)[1].strip()
        self.token = self.url.split("token=", 1)[1]
        assert self.url == f"http://127.0.0.1:{port}/?token={self.token}"

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dashboards(self) -> list[int]:
        """Pids of the session dashboards below serve."""
        found = []
        for pid in descendants(self.process.pid):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"qgadash" in argv and b"serve" not in argv:
                    found.append(pid)
        return found

    def argv_of(self, pid: int) -> list[str]:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode() for part in raw.split(b"\0") if part]


def start_serve(sim: SimProcess, *options: str, env: dict[str, str] | None = None) -> Served:
    port = free_port()
    process = Process(
        qgadash("--hosts", str(sim.hosts), *options, "serve", "--port", str(port)), env=env
    )
    process.start()
    wait_for_port(port, 60, process.process)
    return Served(process, port)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_chromium()
    with SimProcess(tmp_path_factory.mktemp("fleet"), count=COUNT) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def served(sim: SimProcess) -> Iterator[Served]:
    server = start_serve(sim)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    require_chromium()
    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    browser.start()
    try:
        yield browser
    finally:
        browser.stop()


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    tab = await chromium.new_page()
    try:
        yield tab
    finally:
        await tab.close()


async def websocket_status(url: str, origin: str | None = None) -> int:
    """The HTTP status of a websocket handshake (101 when it opens)."""
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def wait_until_gone(pids: list[int], seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() > give_up:
            raise AssertionError(f"still running after {seconds:g} s: {pids}")
        await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def shows_every_vm(screen: str) -> bool:
    return all(f"sim/vm-{i:05d}" in screen for i in range(COUNT))


async def test_without_or_with_a_wrong_token_page_and_websocket_answer_403(
    served: Served, page: Page
) -> None:
    async with aiohttp.ClientSession() as http:
        for query in ("", "?token=", "?token=wrong", f"?token={served.token[:-1]}"):
            async with http.get(f"{served.base()}/{query}") as response:
                assert response.status == 403, query
                assert "token" in await response.text()
        async with http.get(served.url) as response:
            assert response.status == 200
    ws = f"ws://127.0.0.1:{served.port}/ws"
    assert await websocket_status(ws) == 403
    assert await websocket_status(f"{ws}/wrong") == 403
    assert await websocket_status(f"{ws}/{served.token}x") == 403
    # Even with the token, another site's page may not open a session.
    assert await websocket_status(f"{ws}/{served.token}", origin="http://evil.example") == 403
    # The browser is refused the page too, and gets no terminal.
    await page.navigate(f"{served.base()}/?token=wrong")
    body = await wait_for_body(page)
    assert body.startswith("403 Forbidden")
    assert await page.screen() == ""


async def wait_for_body(page: Page) -> str:
    give_up = time.monotonic() + 30
    while True:
        body = await page.evaluate("document.body ? document.body.innerText : ''")
        if body or time.monotonic() > give_up:
            return str(body)
        await asyncio.sleep(0.1)


async def test_the_browser_shows_the_fleet_and_a_key_press_filters(
    served: Served, page: Page
) -> None:
    await page.navigate(served.url)
    # The header's count is a widget of its own: it may reach the browser a frame after
    # the rows, so the wait is for both (it still fails if the count never comes).
    await page.wait_for(
        lambda s: shows_every_vm(s) and f"{COUNT} VMs" in s, "every VM and their count", DRAWN
    )
    await page.wait_for(lambda s: s.count(" ok ") >= COUNT, "every agent ok", DRAWN)
    await page.type("/")
    give_up = time.monotonic() + 20
    while "filter:" not in await page.cursor_line():  # the filter has the focus
        assert time.monotonic() < give_up, "the filter never took the focus"
        await asyncio.sleep(0.1)
    await page.type("vm-00003")
    await page.wait_for(lambda s: "filter: vm-00003" in s, "the filter typed", 20)
    await page.press("Enter")
    screen = await page.wait_for(lambda s: "1 shown" in s, "one VM shown", 20)
    assert "sim/vm-00003" in screen
    assert "sim/vm-00001" not in screen and "sim/vm-00005" not in screen
    (dashboard,) = served.dashboards()
    await page.navigate("about:blank")  # the tab leaves: its dashboard quits
    await wait_until_gone([dashboard], 30)


async def test_a_second_browser_session_waits_for_the_first_to_close(
    served: Served, page: Page
) -> None:
    await page.navigate(served.url)
    await page.wait_for(shows_every_vm, "the first session", DRAWN)
    ws = f"ws://127.0.0.1:{served.port}/ws/{served.token}"
    origin = f"http://127.0.0.1:{served.port}"
    assert await websocket_status(ws, origin) == 409
    await page.navigate("about:blank")
    give_up = time.monotonic() + 30
    while (status := await websocket_status(ws, origin)) != 101:
        assert status == 409 and time.monotonic() < give_up
        await asyncio.sleep(0.2)


async def test_read_only_reaches_the_sessions_dashboard(sim: SimProcess, page: Page) -> None:
    server = start_serve(sim, "--read-only")
    try:
        await page.navigate(server.url)
        await page.wait_for(shows_every_vm, "the fleet, read-only", DRAWN)
        (dashboard,) = server.dashboards()
        assert "--read-only" in server.argv_of(dashboard)
        await page.type("f")  # freeze: refused in read-only mode
        await page.wait_for(lambda s: "READ-ONLY" in s, "actions refused", 20)
    finally:
        assert server.process.stop() == 128 + signal.SIGTERM


async def test_stopping_serve_quits_every_sessions_dashboard(sim: SimProcess, page: Page) -> None:
    server = start_serve(sim)
    await page.navigate(server.url)
    await page.wait_for(shows_every_vm, "the fleet", DRAWN)
    dashboards = server.dashboards()
    assert len(dashboards) == 1
    code = server.process.stop(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    await wait_until_gone(dashboards, 5)  # serve waited for them
    give_up = time.monotonic() + 10
    while not await page.evaluate("document.body.classList.contains('-closed')"):
        assert time.monotonic() < give_up, "the page never said the session ended"
        await asyncio.sleep(0.1)


def audit_vms(state: Path, action: str) -> set[str]:
    path = state / "qgadash" / "audit.jsonl"
    if not path.exists():
        return set()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r["vm"]) for r in records if r["action"] == action}


def local_keepers(state: Path) -> list[int]:
    """Pids of the thaw keepers a session armed (their argv names the state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes()
            if entry.name.isdigit() and b"qgadash.fleet.keeper" in argv and bytes(state) in argv:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name
)
async def test_a_stop_signal_to_serve_thaws_each_session_on_record_as_that_signal(
    sim: SimProcess, page: Page, tmp_path: Path, sig: signal.Signals
) -> None:
    """As the CLI and the dashboard record a thaw on a stop signal ("signal SIGTERM"),
    not as the operator's quit: the session's dashboard is told the signal itself."""
    state = tmp_path / "state"
    server = start_serve(sim, env={"XDG_STATE_HOME": str(state)})
    try:
        await page.navigate(server.url + "&fontsize=8")  # room for the whole freeze dialog
        await page.wait_for(shows_every_vm, "the fleet", DRAWN)
        # Every VM answered once (a VM not polled yet is skipped by the freeze plan).
        await page.wait_for(lambda s: f"● {COUNT} ok" in s, "every VM polled", DRAWN)
        await page.type("a")  # mark every VM
        await page.type("f")
        await page.wait_for(
            lambda s: "Cancel" in s and f"Freeze {COUNT} VMs" in s, "the freeze confirmation", 20
        )
        await page.wait_for(
            lambda s: "keeper" in s.lower() and "checking" not in s.lower(), "the keeper", 20
        )
        await page.press("Tab")  # Cancel -> the confirm button
        await page.press("Enter")
        give_up = time.monotonic() + 30
        while audit_vms(state, "freeze") != sim.vm_ids():
            assert time.monotonic() < give_up, "the session's freeze is not on record"
            await asyncio.sleep(0.2)
        dashboards = server.dashboards()
        assert server.process.stop(sig) == 128 + sig
        await wait_until_gone(dashboards, 5)
        assert audit_vms(state, f"thaw (signal {sig.name})") == sim.vm_ids()
        assert audit_vms(state, "thaw (quit)") == set()
    finally:
        server.process.stop()
        for pid in local_keepers(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def test_a_non_loopback_address_needs_allow_remote(sim: SimProcess) -> None:
    process = Process(qgadash("--hosts", str(sim.hosts), "serve", "--host", "0.0.0.0"))
    process.start()
    assert process.process is not None
    assert process.process.wait(timeout=60) == 2
    message = process.wait_for("--allow-remote", 5)
    assert "not loopback" in message
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")


def test_a_non_loopback_address_with_allow_remote_is_served_with_a_warning(
    sim: SimProcess,
) -> None:
    port = free_port()
    argv = ["serve", "--host", "0.0.0.0", "--allow-remote", "--port", str(port)]
    with Process(qgadash("--hosts", str(sim.hosts), *argv)) as process:
        warning = process.wait_for("not loopback", 60)
        assert "WARNING: listening on 0.0.0.0" in warning
        assert "freeze, thaw, shut down and run commands" in warning
        process.wait_for("qgadash serve: open http://", 10)
        assert process.stop() == 128 + signal.SIGTERM
