"""Agents behind a real OpenSSH sshd, through SshHypervisor: one connection, many VMs."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentConnectionError, AgentTimeout
from qgadash.transport.address import parse_ssh_spec
from qgadash.transport.base import HypervisorState
from qgadash.transport.shell import shell_glob
from qgadash.transport.ssh import CONNECTS_PER_TARGET, SshHypervisor, SshTarget
from tests.integration.realagent import RealAgent, short_temp_dir, start_real_agents
from tests.integration.sshd import SshServer, require_tool

pytestmark = [pytest.mark.real_sshd, pytest.mark.real_agent]

STATUS = [
    ("guest-info", None),
    ("guest-get-host-name", None),
    ("guest-network-get-interfaces", None),
]
AgentFactory = Callable[..., list[RealAgent]]


def state_of(hv: SshHypervisor) -> HypervisorState:
    """The state now (a function, so type checkers do not carry an earlier check over)."""
    return hv.state


def assert_status(results: list[Any]) -> None:
    info, host, interfaces = results
    assert info["version"] and any(c["name"] == "guest-ping" for c in info["supported_commands"])
    assert isinstance(host["host-name"], str) and host["host-name"]
    assert any(nic["name"] == "lo" for nic in interfaces)


async def connect_all(hv: SshHypervisor, addresses: list[str]) -> list[AgentCaller]:
    return list(await asyncio.gather(*(hv.endpoint(a).connect(10) for a in addresses)))


@pytest.mark.parametrize("via", ["socket", "exec"])
async def test_status_calls_reach_every_vm_over_one_connection(
    sshd: SshServer, real_agent_factory: AgentFactory, via: str
) -> None:
    if via == "exec":
        require_tool("socat", "socat")
    names = ["web-1", "web-2", "db-1", "cache-1", "build-7"]
    agents = real_agent_factory(len(names), names)
    hv = SshHypervisor("hv1", sshd.target(), via=via)
    try:
        assert state_of(hv) is HypervisorState.CONNECTING and hv.error is None
        found = await hv.discover([f"{agents[0].socket.parent}/*.sock", "/nonexistent/*.qga"])
        assert sorted(f.name for f in found) == sorted(names)
        assert {f.address for f in found} == {str(a.socket) for a in agents}
        callers = await connect_all(hv, [f.address for f in found])
        results = await asyncio.gather(*(c.call_many(STATUS, timeout=10) for c in callers))
        for result in results:
            assert_status(result)
        assert hv.state is HypervisorState.CONNECTED and hv.error is None
        assert sshd.client_connections() == 1
        assert hv.connection.connected_count == 1
        for caller in callers:
            await caller.close()
            assert caller.closed
    finally:
        await hv.close()
    assert sshd.client_connections() == 0


async def test_forty_held_sessions_share_one_tcp_connection(
    sshd: SshServer, real_agent_factory: AgentFactory
) -> None:
    agents = real_agent_factory(40)
    hv = SshHypervisor("hv1", sshd.target())
    try:
        # Forty VMs connecting at once still make one SSH connection.
        callers = await connect_all(hv, [str(a.socket) for a in agents])
        await asyncio.gather(*(c.call("guest-ping", timeout=10) for c in callers))
        assert sshd.client_connections() == 1
        assert hv.connection.connected_count == 1
        for caller in callers:
            await caller.close()
    finally:
        await hv.close()


async def test_per_poll_sessions_are_cheap_and_leave_nothing_open(
    sshd: SshServer, real_agent_factory: AgentFactory
) -> None:
    """Proxmox-style: connect, sync, run, close, twenty times over the same connection."""
    (agent,) = real_agent_factory(1, ["101"])
    hv = SshHypervisor("pve1", sshd.target())
    try:
        endpoint = hv.endpoint(str(agent.socket))
        await (await endpoint.connect(10)).close()  # the SSH connection itself
        started = time.perf_counter()
        for _ in range(20):
            caller = await endpoint.connect(10)
            assert (await caller.call("guest-get-host-name", timeout=10))["host-name"]
            await caller.close()
        per_session = (time.perf_counter() - started) / 20
        # Mostly ~1-2 ms; the agent's 100 ms reconnect poll (protocol.md) hits some.
        assert per_session < 0.1
        assert sshd.client_connections() == 1
    finally:
        await hv.close()


async def test_discovery_quotes_globs_and_odd_paths(sshd: SshServer) -> None:
    require_tool("socat", "socat")
    directory = short_temp_dir() / "odd dir's $(x)"
    names = ["a,b:c!d", "x$(touch qgadash-pwned)"]
    agents = start_real_agents(directory, 2, names)
    hv_socket = SshHypervisor("hv1", sshd.target())
    hv_exec = SshHypervisor("hv1", sshd.target(), via="exec")
    try:
        found = await hv_socket.discover([f"{directory}/*.sock", f"{directory}/[ax]*.sock"])
        assert sorted(f.address for f in found) == sorted(str(a.socket) for a in agents)
        assert not Path("/root/qgadash-pwned").exists()
        for hv in (hv_socket, hv_exec):
            for agent in agents:
                caller = await hv.endpoint(str(agent.socket)).connect(10)
                assert await caller.call("guest-ping", timeout=10) == {}
                await caller.close()
    finally:
        await hv_socket.close()
        await hv_exec.close()
        for agent in agents:
            agent.stop()
        shutil.rmtree(directory.parent, ignore_errors=True)


@pytest.mark.parametrize("via", ["socket", "exec"])
async def test_missing_socket_and_non_socket_are_named(
    sshd: SshServer, real_agent_factory: AgentFactory, via: str
) -> None:
    if via == "exec":
        require_tool("socat", "socat")
    (agent,) = real_agent_factory(1)
    hv = SshHypervisor("hv1", sshd.target(), via=via)
    try:
        missing = agent.socket.parent / "gone.sock"
        with pytest.raises(AgentConnectionError, match=f"hv1: no agent socket at {missing}"):
            await hv.endpoint(str(missing)).connect(10)
        log = agent.socket.parent / f"{agent.name}.log"
        with pytest.raises(AgentConnectionError, match=f"hv1: {log} is not a socket"):
            await hv.endpoint(str(log)).connect(10)
        # The failures did not hurt the connection.
        caller = await hv.endpoint(str(agent.socket)).connect(10)
        await caller.call("guest-ping", timeout=10)
        await caller.close()
        assert hv.state is HypervisorState.CONNECTED
    finally:
        await hv.close()


async def test_forwarding_refused_by_sshd_is_explained(
    sshd_factory: Callable[..., SshServer], real_agent_factory: AgentFactory
) -> None:
    require_tool("socat", "socat")
    server = sshd_factory("AllowStreamLocalForwarding no")
    (agent,) = real_agent_factory(1)
    hv = SshHypervisor("hv1", server.target())
    try:
        with pytest.raises(AgentConnectionError, match="AllowStreamLocalForwarding"):
            await hv.endpoint(str(agent.socket)).connect(10)
        # exec needs no forwarding.
        hv_exec = SshHypervisor("hv1", server.target(), via="exec")
        caller = await hv_exec.endpoint(str(agent.socket)).connect(10)
        await caller.call("guest-ping", timeout=10)
        await hv_exec.close()
    finally:
        await hv.close()


async def test_exec_sessions_wait_for_a_free_session_slot(
    sshd: SshServer, real_agent_factory: AgentFactory
) -> None:
    require_tool("socat", "socat")
    agents = real_agent_factory(9)
    hv = SshHypervisor("hv1", sshd.target(), via="exec", max_sessions=8)
    try:
        held = await connect_all(hv, [str(a.socket) for a in agents[:8]])
        with pytest.raises(AgentTimeout, match="MaxSessions"):
            await hv.endpoint(str(agents[8].socket)).connect(1)
        await held[0].close()
        ninth = await hv.endpoint(str(agents[8].socket)).connect(10)
        await ninth.call("guest-ping", timeout=10)
        for caller in [*held[1:], ninth]:
            await caller.close()
    finally:
        await hv.close()


async def test_ssh_config_alias_supplies_host_port_user_key_and_known_hosts(
    sshd: SshServer,
    real_agent_factory: AgentFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (agent,) = real_agent_factory(1)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        f"""Host qgadash-test-alias
    HostName {sshd.host}
    Port {sshd.port}
    User root
    IdentityFile {sshd.client_key}
    UserKnownHostsFile {sshd.known_hosts}
"""
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    hv = SshHypervisor("hv1", SshTarget("qgadash-test-alias"))
    try:
        caller = await hv.endpoint(str(agent.socket)).connect(10)
        assert await caller.call("guest-ping", timeout=10) == {}
        assert hv.connection.where == f"root@{sshd.host}:{sshd.port}"
    finally:
        await hv.close()


async def test_user_known_hosts_none_does_not_turn_checking_off(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host *\n    UserKnownHostsFile none\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    hv = SshHypervisor("hv1", SshTarget(sshd.spec(), identity=str(sshd.client_key)))
    try:
        with pytest.raises(AgentConnectionError, match="is unknown"):
            await hv.discover(["/tmp/*.sock"])
        assert hv.state is HypervisorState.HOST_KEY_REJECTED
    finally:
        await hv.close()


async def test_jump_host_carries_the_connection(
    sshd: SshServer,
    sshd_factory: Callable[..., SshServer],
    real_agent_factory: AgentFactory,
    tmp_path: Path,
) -> None:
    inner = sshd_factory()
    (agent,) = real_agent_factory(1)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text() + inner.known_hosts.read_text())
    target = SshTarget(
        inner.spec(), identity=str(sshd.client_key), known_hosts=str(known), jump=sshd.spec()
    )
    hv = SshHypervisor("hv1", target)
    try:
        caller = await hv.endpoint(str(agent.socket)).connect(10)
        assert await caller.call("guest-ping", timeout=10) == {}
        # We talk TCP to the bastion only; the bastion's sshd talks to the inner one.
        assert inner.client_connections() == 0
        assert sshd.client_connections() == 1
    finally:
        await hv.close()


async def test_simultaneous_connects_to_one_sshd_stay_under_max_startups(
    sshd_factory: Callable[..., SshServer],
) -> None:
    """Fifteen hypervisor entries naming one host connect at once. sshd drops
    unauthenticated connections beyond MaxStartups; qgadash has at most 4 in flight."""
    server = sshd_factory(f"MaxStartups {CONNECTS_PER_TARGET + 2}")
    links = [SshHypervisor(f"hv{i}", server.target()) for i in range(15)]
    try:
        results = await asyncio.gather(
            *(hv.discover(["/nonexistent/*.sock"]) for hv in links), return_exceptions=True
        )
        assert results == [[]] * 15
        assert all(hv.connection.connected_count == 1 for hv in links)
    finally:
        await asyncio.gather(*(hv.close() for hv in links))


def test_ssh_spec_forms() -> None:
    assert parse_ssh_spec("hv1") == (None, "hv1", None)
    assert parse_ssh_spec("ops@hv1.example.net:2222") == ("ops", "hv1.example.net", 2222)
    assert parse_ssh_spec("root@[2001:db8::1]:22") == ("root", "2001:db8::1", 22)
    assert parse_ssh_spec("2001:db8::1") == (None, "2001:db8::1", None)
    for bad in ("hv1:0", "hv1:ssh", "@hv1", "", "[::1"):
        with pytest.raises(ValueError):
            parse_ssh_spec(bad)


def test_shell_glob_keeps_only_glob_characters_special() -> None:
    assert shell_glob("/var/run/qemu-server/*.qga") == "/var/run/qemu-server/*.qga"
    assert shell_glob("/run/a b/[0-9]*.sock") == "'/run/a b/'[0-9]*.sock"
    assert shell_glob("/x/$(reboot)/*") == "'/x/$(reboot)/'*"
    assert shell_glob("~/vms/*.sock") == '"$HOME"/vms/*.sock'
    assert shell_glob("/x/[;reboot]") == "'/x/[;reboot]'"
