"""Guests of a real libvirtd, reached only through libvirt (LibvirtHypervisor).

Three TCG guests from the tests/guests image, booted once for the module: `lv-web`
(agent, data disk), `lv-noagent` (booted with qga.agent=0) and `lv-down` (shut down by
a test). Their domains are destroyed at teardown, then libvirtd and virtlogd are
stopped by pid (tests/integration/libvirtd.py).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent.client import AgentCaller, NoReplyOutcome
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentTimeout,
)
from qgadash.transport.base import HypervisorState
from qgadash.transport.libvirt import LibvirtHypervisor, command_output, libvirt_error
from tests.guests.image import GuestImage
from tests.integration.libvirtd import Libvirtd, running_libvirtd
from tests.integration.sshd import SshServer

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]

STATUS = [
    ("guest-info", None),
    ("guest-fsfreeze-status", None),
    ("guest-network-get-interfaces", None),
]


@dataclass
class Domains:
    daemon: Libvirtd
    web: str
    noagent: str
    down: str


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[Libvirtd]:
    # Works whether or not tests.integration.libvirtd is registered as a plugin: a
    # libvirtd that already answers is reused and left running.
    with running_libvirtd() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def domains(libvirtd: Libvirtd, guest_image: GuestImage) -> Iterator[Domains]:
    kernel = guest_image.vmlinux or guest_image.bzimage
    names = {"web": "lv-web", "noagent": "lv-noagent", "down": "lv-down"}
    for name in names.values():
        libvirtd.destroy(name)  # leftovers of an interrupted run
    created = [
        libvirtd.start_guest(kernel, guest_image.initrd, "lv-web", ip="10.0.2.21/24"),
        libvirtd.start_guest(kernel, guest_image.initrd, "lv-noagent", agent=False),
        libvirtd.start_guest(kernel, guest_image.initrd, "lv-down", ip="10.0.2.23/24"),
    ]
    try:
        with ThreadPoolExecutor(len(created)) as pool:
            list(pool.map(libvirtd.wait_booted, created))
        yield Domains(libvirtd, *created)
    finally:
        with ThreadPoolExecutor(len(created)) as pool:
            list(pool.map(libvirtd.destroy, created))


async def connected(hv: LibvirtHypervisor, name: str, timeout: float = 5.0) -> AgentCaller:
    found = {agent.name: agent.address for agent in await hv.discover([])}
    return await hv.endpoint(found[name]).connect(timeout)


async def test_discovery_lists_running_domains(domains: Domains) -> None:
    hv = LibvirtHypervisor("lab")
    try:
        found = await hv.discover(["/ignored/*.sock"])
        names = {agent.name for agent in found}
        assert {domains.web, domains.noagent, domains.down} <= names
        assert all(len(agent.address) == 36 for agent in found)  # UUIDs
        assert hv.state is HypervisorState.LOCAL and hv.error is None
    finally:
        await hv.close()


async def test_status_calls_through_libvirt(domains: Domains) -> None:
    hv = LibvirtHypervisor("lab")
    try:
        caller = await connected(hv, domains.web)
        info, fsfreeze, interfaces = await caller.call_many(STATUS, timeout=5)
        # guest-info has no libvirt verb: a batch of reads leaves it out (it would taint
        # the domain, test_libvirt_manager.py); asked on its own, it goes through raw.
        assert isinstance(info, AgentCommandError) and "taint" in info.desc
        info = await caller.call("guest-info", timeout=5)
        assert info["version"] and any(
            c["name"] == "guest-ping" for c in info["supported_commands"]
        )
        assert fsfreeze == "thawed"
        assert not isinstance(interfaces, AgentError), interfaces
        addresses = {a["ip-address"] for nic in interfaces for a in nic.get("ip-addresses", [])}
        assert "10.0.2.21" in addresses
        assert (await caller.call("guest-get-host-name", timeout=5))["host-name"] == "lv-web"
        # The agent's own errors come back as command errors, in place.
        ping, missing = await caller.call_many(
            [("guest-ping", None), ("guest-no-such-command", None)], timeout=5
        )
        assert ping == {}
        assert isinstance(missing, AgentCommandError) and missing.not_found
        assert not caller.closed
        await caller.close()  # shared virsh: nothing to close, the caller stays usable
        assert await caller.call("guest-ping", timeout=5) == {}
    finally:
        await hv.close()
    assert caller.closed


def virsh_children() -> set[int]:
    """Pids of this process's virsh shells."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            argv0 = argv[0]
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        # (The hypervisor's one `virsh event --loop`, for domain states, is not a shell.)
        if ppid == os.getpid() and os.path.basename(argv0) == b"virsh" and b"event" not in argv:
            found.add(int(entry.name))
    return found


async def test_one_long_lived_virsh_serves_every_call(domains: Domains) -> None:
    """No virsh per call (~17-20 ms each; ~1.5 ms through the long-lived one: timings are
    for bench/, not here): 60 calls in a row go through the one virsh process."""
    hv = LibvirtHypervisor("lab")
    try:
        caller = await connected(hv, domains.web)
        await caller.call("guest-ping", timeout=5)
        before = virsh_children()
        for _ in range(60):
            await caller.call("guest-ping", timeout=5)
        assert len(before) == 1 and virsh_children() == before
    finally:
        await hv.close()


async def test_freeze_then_thaw_through_libvirt(domains: Domains) -> None:
    hv = LibvirtHypervisor("lab")
    try:
        caller = await connected(hv, domains.web)
        try:
            frozen = await caller.call("guest-fsfreeze-freeze", timeout=10)
            assert frozen >= 1  # /data, the ext4 disk
            assert await caller.call("guest-fsfreeze-status", timeout=5) == "frozen"
            with pytest.raises(AgentCommandError) as caught:
                await caller.call("guest-get-fsinfo", timeout=5)
            assert caught.value.disabled
        finally:
            thawed = await caller.call("guest-fsfreeze-thaw", timeout=10)
        assert thawed >= 1
        assert await caller.call("guest-fsfreeze-status", timeout=5) == "thawed"
    finally:
        await hv.close()


async def test_guest_without_agent_fails_fast(domains: Domains) -> None:
    hv = LibvirtHypervisor("lab")
    try:
        found = {agent.name: agent.address for agent in await hv.discover([])}
        started = time.perf_counter()
        with pytest.raises(AgentConnectionError, match="guest agent is not running"):
            await hv.endpoint(found[domains.noagent]).connect(3)
        assert time.perf_counter() - started < 3
        assert hv.state is HypervisorState.LOCAL  # one VM's agent is not the hypervisor's fault
    finally:
        await hv.close()


async def test_hung_agent_times_out_within_the_session_timeout(domains: Domains) -> None:
    """A stopped (SIGSTOP) agent: libvirt would spend 5 s in its own guest-sync; the
    session lowers that with guest-agent-timeout, so the call fails in ~2 s."""
    hv = LibvirtHypervisor("lab")
    try:
        caller = await connected(hv, domains.web, timeout=2)
        stopped = f"qgadash-test: agent stopped {uuid.uuid4().hex[:8]}"
        stop_for_a_while = (
            f"sleep 0.5; kill -STOP $(pidof qemu-ga); echo '{stopped}' > /dev/console; "
            "sleep 3; kill -CONT $(pidof qemu-ga)"
        )
        await caller.call(
            "guest-exec", {"path": "/bin/sh", "arg": ["-c", stop_for_a_while]}, timeout=5
        )
        deadline = time.monotonic() + 10
        while stopped not in domains.daemon.console(domains.web):  # the guest says so
            assert time.monotonic() < deadline, domains.daemon.console(domains.web)[-1500:]
            await asyncio.sleep(0.05)
        other = await connected(hv, domains.down, timeout=2)
        started = time.perf_counter()
        results: tuple[Any, ...] = await asyncio.gather(
            caller.call("guest-ping", timeout=2), other.call("guest-ping", timeout=2),
            return_exceptions=True,
        )  # fmt: skip
        hung, healthy = results
        assert isinstance(hung, AgentTimeout), hung
        assert "not available for now" in str(hung)
        assert healthy == {}  # another virsh of the pool served the healthy guest
        assert time.perf_counter() - started < 3.5
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await caller.call("guest-ping", timeout=2) == {}
                break
            except AgentTimeout:
                assert time.monotonic() < deadline
    finally:
        await hv.close()


async def test_libvirt_over_ssh_uses_one_connection(domains: Domains, sshd: SshServer) -> None:
    hv = LibvirtHypervisor("hv2", sshd.target())
    try:
        found = {agent.name: agent.address for agent in await hv.discover([])}
        assert domains.web in found
        # Domain states over SSH too: listed, then followed by `virsh event` on a channel
        # of the same connection.
        assert hv.domain_state(found[domains.web]) == "running"
        await asyncio.wait_for(hv.watch.watching.wait(), 30)
        caller = await hv.endpoint(found[domains.web]).connect(5)
        status: list[Any] = await caller.call_many(STATUS[1:], timeout=5)
        fsfreeze, _ = status
        assert fsfreeze == "thawed"
        assert hv.state is HypervisorState.CONNECTED
        assert sshd.client_connections() == 1
        started = time.perf_counter()
        for _ in range(20):
            await caller.call("guest-ping", timeout=5)
        assert (time.perf_counter() - started) / 20 < 0.02  # not ~315 ms of qemu+ssh://
    finally:
        await hv.close()


async def test_shutdown_through_libvirt_ends_the_domain(domains: Domains) -> None:
    hv = LibvirtHypervisor("lab")
    try:
        caller = await connected(hv, domains.down)
        outcome = await caller.call_no_reply("guest-shutdown", {"mode": "powerdown"}, grace=2)
        assert outcome is NoReplyOutcome.NO_ERROR
        deadline = time.monotonic() + 30
        while domains.daemon.domain_state(domains.down) not in ("gone", "shut off"):
            assert time.monotonic() < deadline, domains.daemon.console(domains.down)[-1500:]
            await asyncio.sleep(0.3)
        names = {agent.name for agent in await hv.discover([])}
        assert domains.down not in names
        with pytest.raises(AgentConnectionError, match=r"domain is gone|not running"):
            await caller.call("guest-ping", timeout=2)
    finally:
        await hv.close()


async def test_unreachable_libvirtd_is_the_hypervisors_state() -> None:
    hv = LibvirtHypervisor("lab", uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    try:
        with pytest.raises(AgentConnectionError) as caught:
            await hv.discover([])
        assert str(caught.value).startswith("lab: virsh could not start: ")
        assert "/nonexistent/libvirt-sock" in str(caught.value)
        assert hv.state is HypervisorState.UNREACHABLE and hv.error == str(caught.value)
        with pytest.raises(AgentConnectionError, match="virsh could not start"):
            await hv.endpoint("web").connect(2)
    finally:
        await hv.close()


def test_libvirt_messages_map_to_agent_errors() -> None:
    cases = {
        "error: Guest agent is not responding: QEMU guest agent is not connected": (
            AgentConnectionError
        ),
        "error: Guest agent is not responding: Guest agent not available for now": AgentTimeout,
        "error: argument unsupported: QEMU guest agent is not configured": AgentConnectionError,
        "error: Requested operation is not valid: domain is not running": AgentConnectionError,
        "error: failed to get domain 'web'": AgentConnectionError,
    }
    for message, kind in cases.items():
        assert type(libvirt_error("lab/web", "guest-ping", message)) is kind
    error = libvirt_error(
        "lab/web",
        "guest-exec",
        "error: internal error: unable to execute QEMU agent command 'guest-exec': "
        "Command guest-exec has been disabled: the agent is in frozen state",
    )
    assert isinstance(error, AgentCommandError) and error.disabled
    assert error.desc == "Command guest-exec has been disabled: the agent is in frozen state"


def test_command_output_strips_prompt_and_echoes() -> None:
    segment = (
        b"virsh # qemu-agent-command --domain 'x' --timeout 3 --cmd '{}'\n"
        b'{"return":{}}\n'
        b"virsh # echo Q'G'A-END-t-1\n"
    )
    assert command_output(segment) == b'{"return":{}}'
    assert command_output(b"virsh # guest-agent-timeout x\nvirsh # echo Q'G'A-END-t-2\n") == b""
    long_echo = b"\r<" + b"x" * 70 + b"' --timeout 3\n" + b"error: oops\n" + b"virsh # echo m\n"
    assert command_output(long_echo) == b"error: oops"


async def test_engine_polls_freezes_and_thaws_through_libvirt(
    domains: Domains, tmp_path: Any
) -> None:
    """The product path: hosts.toml with via = "libvirt", the engine, and `status --json`."""
    import json
    import subprocess
    import sys

    from qgadash.fleet.config import load_config
    from qgadash.fleet.engine import FleetEngine
    from qgadash.fleet.model import AgentState, FreezeState

    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[settings]\ntimeout = 2.0\n[[hypervisor]]\nname = "lv"\nvia = "libvirt"\n')
    engine = FleetEngine(load_config(hosts))
    try:
        started = time.monotonic()
        await engine.poll_once()
        assert time.monotonic() - started < 2.0 + 3.0
        web = engine.store.get("lv/lv-web")
        noagent = engine.store.get("lv/lv-noagent")
        assert web is not None and web.agent is AgentState.OK, web
        assert web.facts.hostname and web.freeze is FreezeState.THAWED
        assert noagent is not None and noagent.agent in (AgentState.UNREACHABLE, AgentState.TIMEOUT)
        (frozen,) = await engine.freeze(["lv/lv-web"], thaw_after=60)
        assert frozen.ok and frozen.value >= 1, frozen
        await engine.poll_vm("lv/lv-web")
        assert engine.store.get("lv/lv-web").freeze is FreezeState.FROZEN  # type: ignore[union-attr]
        (thawed,) = await engine.thaw(["lv/lv-web"])
        assert thawed.ok, thawed
        await engine.poll_vm("lv/lv-web")
        assert engine.store.get("lv/lv-web").freeze is FreezeState.THAWED  # type: ignore[union-attr]
        assert engine.frozen_by_us() == []
    finally:
        await engine.stop()
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "qgadash",
            "--hosts",
            str(hosts),
            "status",
            "--json",
            "--match",
            "lv/lv-web",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(proc.stdout)
    assert doc["vms"][0]["agent"]["state"] == "ok" and doc["vms"][0]["fsfreeze"] == "thawed"
    assert doc["hypervisors"][0]["state"] == "local"
