"""Tests of the real-guest fixture itself, and of the guest image's agent features
that later product tests rely on (freeze really freezes, shutdown really exits).

Uses only the fixture's raw helpers, never the product's client.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.guests.agent import AgentError, RawAgent, open_agent
from tests.guests.image import KNOWN_FILES, OS_RELEASE, GuestImage, ensure_image
from tests.guests.vm import Guest, GuestSpec, live_guests

if TYPE_CHECKING:  # a runtime import would defeat pytest's assertion rewriting of the plugin
    from tests.guests.fixtures import GuestFactory

# Works whether or not tests/conftest.py registers the plugin (pytest dedupes).
pytest_plugins = ["tests.guests.fixtures"]

pytestmark = pytest.mark.guest


def _exec(agent: RawAgent, script: str) -> int:
    reply = agent.execute(
        "guest-exec", {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
    )
    return int(reply["pid"])


def _exec_wait(agent: RawAgent, pid: int, timeout: float = 10.0) -> dict[str, Any]:
    """Poll guest-exec-status until the process exited (output only appears then)."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = agent.execute("guest-exec-status", {"pid": pid})
        if status["exited"]:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"guest-exec pid {pid} still running after {timeout} s")
        time.sleep(0.05)


def _out(status: dict[str, Any]) -> str:
    return base64.b64decode(status.get("out-data", "")).decode()


def _read_file(agent: RawAgent, path: str) -> bytes:
    handle = agent.execute("guest-file-open", {"path": path, "mode": "r"})
    data = b""
    try:
        while True:
            chunk = agent.execute("guest-file-read", {"handle": handle, "count": 4096})
            data += base64.b64decode(chunk["buf-b64"])
            if chunk["eof"]:
                return data
    finally:
        agent.execute("guest-file-close", {"handle": handle})


def _pid_gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def test_image_is_cached(guest_image: GuestImage) -> None:
    again = ensure_image()
    assert again == guest_image
    assert guest_image.initrd.stat().st_size > 0
    assert guest_image.vmlinux is not None and guest_image.vmlinux.read_bytes()[:4] == b"\x7fELF"


def test_shared_guests_are_running(shared_guests: list[Guest]) -> None:
    assert [g.hostname for g in shared_guests] == ["g1", "g2"]
    for guest in shared_guests:
        assert guest.is_running()
        assert guest.status() == "running"
        assert guest.agent_socket.is_socket()
        assert guest.ready_seconds is not None


def test_raw_sync_delimited(shared_guests: list[Guest]) -> None:
    """The exact bytes protocol.md describes: a parse error for our 0xFF, then 0xFF+id."""
    ident = secrets.randbits(62)
    request = {"execute": "guest-sync-delimited", "arguments": {"id": ident}}
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(shared_guests[0].agent_socket))
        sock.sendall(b"\xff" + json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\xff" + json.dumps({"return": ident}).encode() + b"\n"):
            chunk = sock.recv(4096)
            assert chunk, f"agent closed; got {buf!r}"
            buf += chunk
    first = json.loads(buf.split(b"\n", 1)[0])
    assert first["error"]["class"] == "GenericError"


def test_agent_info_and_identity(shared_guests: list[Guest]) -> None:
    for guest in shared_guests:
        with guest.agent() as agent:
            info = agent.execute("guest-info")
            assert info["version"]
            enabled = {c["name"] for c in info["supported_commands"] if c["enabled"]}
            assert {"guest-exec", "guest-fsfreeze-freeze", "guest-shutdown"} <= enabled
            assert agent.execute("guest-get-host-name") == {"host-name": guest.hostname}
            ifaces = {i["name"]: i for i in agent.execute("guest-network-get-interfaces")}
            addrs = [a["ip-address"] for a in ifaces["dummy0"]["ip-addresses"]]
            assert guest.ip in addrs
            osinfo = agent.execute("guest-get-osinfo")
            assert osinfo["id"] == "qgadash-guest"
            mounts = [fs["mountpoint"] for fs in agent.execute("guest-get-fsinfo")]
            assert mounts == ["/data"]


def test_file_read_known_files(shared_guests: list[Guest]) -> None:
    with shared_guests[0].agent() as agent:
        assert _read_file(agent, "/etc/os-release") == OS_RELEASE
        blob = "/etc/qgadash/blob-64k.bin"
        assert _read_file(agent, blob) == KNOWN_FILES[blob]


def test_agent_respawns_after_kill(shared_guests: list[Guest]) -> None:
    guest = shared_guests[0]
    with guest.agent() as agent:
        old = _out(_exec_wait(agent, _exec(agent, "pidof qemu-ga"))).strip()
        # Delayed so the guest-exec reply is sent before the agent dies.
        _exec(agent, "usleep 200000; kill $(pidof qemu-ga)")
    deadline = time.monotonic() + 20
    while True:  # the agent is down for a moment: each attempt syncs afresh
        try:
            with guest.agent(timeout=2) as agent:
                new = _out(_exec_wait(agent, _exec(agent, "pidof qemu-ga"))).strip()
            if new != old:
                break
        except (TimeoutError, OSError, AgentError):
            pass
        assert time.monotonic() < deadline, "agent did not come back\n" + guest.console_tail(30)
    assert new.isdigit()


FREEZE_WINDOW = 2.0
_TICKER = """
rm -f /tmp/ticks /tmp/stop; i=0
while [ ! -e /tmp/stop ] && [ $i -lt 1000 ]; do
    echo $i > /data/f; sync
    read -r up _ < /proc/uptime; echo "$up" >> /tmp/ticks
    i=$((i + 1)); usleep 50000
done
cat /tmp/ticks
"""


def test_fsfreeze_blocks_writes_to_data(shared_guests: list[Guest]) -> None:
    """guest-exec is disabled while frozen, so a writer started before the freeze
    logs a timestamp after each write+sync to /data; the freeze must show up as a
    gap as long as the frozen window, and the writer must finish after thaw."""
    guest = shared_guests[1]
    with guest.agent(timeout=10) as agent:
        pid = _exec(agent, _TICKER)
        deadline = time.monotonic() + 10
        while True:  # wait until the writer is demonstrably writing
            try:
                if _read_file(agent, "/tmp/ticks").count(b"\n") >= 3:
                    break
            except AgentError:  # not created yet
                pass
            assert time.monotonic() < deadline, "writer never wrote"
            time.sleep(0.05)
        try:
            assert agent.execute("guest-fsfreeze-freeze") == 1  # /data only
            assert agent.execute("guest-fsfreeze-status") == "frozen"
            with pytest.raises(AgentError, match="disabled"):
                agent.execute("guest-exec-status", {"pid": pid})
            time.sleep(FREEZE_WINDOW)  # the window being measured, not a wait for state
        finally:
            agent.execute("guest-fsfreeze-thaw")
        assert agent.execute("guest-fsfreeze-status") == "thawed"
        assert _exec(agent, "touch /tmp/stop") > 0
        status = _exec_wait(agent, pid)
    assert status["exitcode"] == 0
    ticks = [float(t) for t in _out(status).split()]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) >= FREEZE_WINDOW * 0.75, gaps
    assert sorted(gaps)[len(gaps) // 2] < 0.5, gaps  # otherwise writes are quick


def test_guest_without_agent_is_silent(guest_factory: GuestFactory) -> None:
    guest = guest_factory(agent=False)
    assert guest.status() == "running"
    with RawAgent(guest.agent_socket) as agent, pytest.raises(TimeoutError):
        agent.sync(timeout=2.0)
    pid = guest.pid
    assert pid is not None
    guest.stop()
    guest.stop()  # idempotent
    assert _pid_gone(pid)
    assert guest not in live_guests()


def test_guest_shutdown_exits_qemu(guest_factory: GuestFactory) -> None:
    guest = guest_factory()
    with guest.agent() as agent:
        agent.send("guest-shutdown", {"mode": "powerdown"})  # no reply on success
        assert guest.wait_exit(20) == 0, guest.console_tail()
    assert not guest.is_running()
    assert "qgadash-shutdown: poweroff" in guest.console_tail()
    guest.stop()


def test_open_agent_reports_missing_socket(tmp_path: Any) -> None:
    with pytest.raises(OSError):
        open_agent(tmp_path / "nope.sock", timeout=1)


def test_a_shared_guest_whose_agent_is_gone_is_booted_afresh(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    """One broken shared guest must cost one test, not every later one (SharedGuests)."""
    from tests.guests.fixtures import SharedGuests  # here: see the TYPE_CHECKING import

    pool = SharedGuests(guest_image, tmp_path, [GuestSpec(name="h1", ip="10.0.2.31/24")])
    try:
        pool.heal()  # healthy: kept as it is
        assert pool.reboots == 0
        broken = pool.guests[0]
        broken.stop()
        with pytest.warns(UserWarning, match="shared guest h1: agent silent"):
            pool.heal()
        fresh = pool.guests[0]
        assert fresh is not broken and fresh.is_running() and pool.reboots == 1
        with fresh.agent() as agent:
            assert agent.execute("guest-get-host-name") == {"host-name": "h1"}
    finally:
        pool.stop()
