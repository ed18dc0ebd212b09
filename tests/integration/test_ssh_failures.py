"""How an SSH hypervisor fails, and recovers, against a real sshd: host keys, logins,
dead and restarted servers. Every failure is one the operator can read and act on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.transport.base import HypervisorState
from qgadash.transport.ssh import SshHypervisor, SshTarget
from tests.integration.realagent import RealAgent
from tests.integration.sshd import SshServer, free_port, generate_key

pytestmark = [pytest.mark.real_sshd, pytest.mark.real_agent]

AgentFactory = Callable[..., list[RealAgent]]


async def test_unknown_host_key_is_refused_naming_host_and_file(
    sshd: SshServer, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("# nobody trusted yet\n")
    hv = SshHypervisor(
        "hv1", SshTarget(sshd.spec(), identity=str(sshd.client_key), known_hosts=str(known))
    )
    try:
        with pytest.raises(AgentConnectionError) as caught:
            await hv.discover(["/run/qga/*.sock"])
        message = str(caught.value)
        assert message.startswith(f"hv1: ssh host key for [127.0.0.1]:{sshd.port} is unknown")
        assert f"not in {known}" in message and "SHA256:" in message
        assert hv.state is HypervisorState.HOST_KEY_REJECTED and hv.error == message
        # Never bypassed: the VMs fail with the same words.
        with pytest.raises(AgentConnectionError, match="is unknown"):
            await hv.endpoint("/run/qga/x.sock").connect(5)
    finally:
        await hv.close()


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
async def test_changed_host_key_is_refused_naming_the_line(
    sshd: SshServer, tmp_path: Path, key_type: str
) -> None:
    # rsa: known_hosts has only a key type the server does not offer any more.
    other = generate_key(tmp_path / "other_host_key", key_type=key_type).split()
    known = tmp_path / "known_hosts"
    known.write_text(
        "# hypervisors\n"
        f"[127.0.0.1]:{free_port()} {other[0]} {other[1]}\n"
        f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n"
    )
    hv = SshHypervisor(
        "hv1", SshTarget(sshd.spec(), identity=str(sshd.client_key), known_hosts=str(known))
    )
    try:
        with pytest.raises(AgentConnectionError) as caught:
            await hv.endpoint("/run/qga/x.sock").connect(5)
        assert str(caught.value).startswith(
            f"hv1: ssh host key for [127.0.0.1]:{sshd.port} does not match {known} line 3"
        )
        assert hv.state is HypervisorState.HOST_KEY_REJECTED
    finally:
        await hv.close()


async def test_refused_login_is_auth_failed(sshd: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    generate_key(stranger)
    hv = SshHypervisor(
        "hv1",
        SshTarget(sshd.spec(), identity=str(stranger), known_hosts=str(sshd.known_hosts)),
    )
    try:
        with pytest.raises(AgentConnectionError) as caught:
            await hv.discover(["/run/qga/*.sock"])
        message = str(caught.value)
        assert message.startswith(f"hv1: ssh login as root@127.0.0.1:{sshd.port} refused")
        assert str(stranger) in message
        assert hv.state is HypervisorState.AUTH_FAILED
    finally:
        await hv.close()


async def test_closed_port_is_unreachable_and_retried_with_backoff(sshd: SshServer) -> None:
    port = free_port()
    target = SshTarget(
        f"root@127.0.0.1:{port}", identity=str(sshd.client_key), known_hosts=str(sshd.known_hosts)
    )
    hv = SshHypervisor("hv1", target)
    try:
        with pytest.raises(AgentConnectionError, match="connection refused"):
            await hv.endpoint("/run/qga/a.sock").connect(5)
        assert hv.state is HypervisorState.UNREACHABLE
        # Within the backoff window the other VMs fail at once, without a new attempt.
        started = time.perf_counter()
        with pytest.raises(AgentConnectionError, match=r"next attempt in \d+ s"):
            await hv.endpoint("/run/qga/b.sock").connect(5)
        assert time.perf_counter() - started < 0.05
    finally:
        await hv.close()


def state_of(hv: SshHypervisor) -> HypervisorState:
    """The state now (a function, so type checkers do not carry an earlier check over)."""
    return hv.state


async def _ping(caller: AgentCaller) -> None:
    assert await caller.call("guest-ping", timeout=1) == {}


async def test_stopped_sshd_turns_unreachable_within_keepalive_window_while_other_answers(
    sshd_factory: Callable[..., SshServer], real_agent_factory: AgentFactory
) -> None:
    """SIGSTOP = a hypervisor that froze: TCP stays up, nothing answers. Defaults apply
    (keepalive every 3 s, dead after 3 missed = 9 s)."""
    frozen, healthy = sshd_factory(), sshd_factory()
    agents = real_agent_factory(2)
    hv_a = SshHypervisor("hv-a", frozen.target(), connect_timeout=3.0)
    hv_b = SshHypervisor("hv-b", healthy.target())
    endpoint_a = hv_a.endpoint(str(agents[0].socket))
    try:
        caller_a = await endpoint_a.connect(5)
        caller_b = await hv_b.endpoint(str(agents[1].socket)).connect(5)
        await _ping(caller_a)
        frozen.pause()
        started = time.monotonic()
        noticed: float | None = None
        failures: list[str] = []
        while time.monotonic() - started < 14:
            await _ping(caller_b)  # the other hypervisor's VM answers every round
            try:
                if caller_a.closed:
                    caller_a = await endpoint_a.connect(1)
                await _ping(caller_a)
            except AgentError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            if hv_a.state is HypervisorState.UNREACHABLE:
                noticed = time.monotonic() - started
                break
            await asyncio.sleep(0.2)
        assert noticed is not None, failures
        assert noticed < 10.5
        assert hv_a.error is not None and "stopped answering" in hv_a.error
        assert caller_a.closed
        with pytest.raises(AgentConnectionError, match="hv-a: "):
            await endpoint_a.connect(1)
        assert state_of(hv_b) is HypervisorState.CONNECTED

        frozen.resume()
        deadline = time.monotonic() + 20
        while True:
            try:
                caller_a = await endpoint_a.connect(5)
                break
            except AgentError:
                assert time.monotonic() < deadline, hv_a.error
                await asyncio.sleep(0.3)
        await _ping(caller_a)
        assert state_of(hv_a) is HypervisorState.CONNECTED and hv_a.error is None
        assert hv_a.connection.connected_count == 2
    finally:
        frozen.resume()
        await hv_a.close()
        await hv_b.close()


async def test_restarted_sshd_is_reconnected(
    sshd_factory: Callable[..., SshServer], real_agent_factory: AgentFactory
) -> None:
    server = sshd_factory()
    (agent,) = real_agent_factory(1)
    hv = SshHypervisor("hv1", server.target())
    endpoint = hv.endpoint(str(agent.socket))
    try:
        caller = await endpoint.connect(5)
        await _ping(caller)
        server.stop()  # kills the listener and the connection's sshd: like a reboot
        deadline = time.monotonic() + 5
        while hv.state is not HypervisorState.UNREACHABLE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert caller.closed
        with pytest.raises(AgentConnectionError, match="hv1: "):
            await caller.call("guest-ping", timeout=1)
        server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                caller = await endpoint.connect(5)
                break
            except AgentError:
                assert time.monotonic() < deadline, hv.error
                await asyncio.sleep(0.3)
        await _ping(caller)
        assert state_of(hv) is HypervisorState.CONNECTED
        assert hv.connection.connected_count == 2
    finally:
        await hv.close()
