"""The thaw keeper armed on an SSH hypervisor (issue 11, item 3), against a real sshd.

The "hypervisor" is this machine behind a real OpenSSH sshd on 127.0.0.1; the guests are
simulated agents (qgadash.sim) that really freeze and thaw, served by the test's event
loop on unix sockets the keeper reaches with socat, and one real qemu-ga (freeze and
thaw blocked, as everywhere outside a VM). Nothing in this process thaws anything: each
test freezes a guest, arms the keeper and then only watches.

There is no systemd as PID 1 here, so every keeper armed here is the `nohup` kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from qgadash.agent.errors import AgentConnectionError, AgentTimeout
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.transport.keeper import RemoteThawKeeper, ThawRoute
from qgadash.transport.libvirt import LibvirtHypervisor
from qgadash.transport.ssh import DEFAULT_SUDO_WRAPPER, SshHypervisor
from tests.guests.image import GuestImage
from tests.integration.libvirtd import Libvirtd
from tests.integration.realagent import RealAgent, missing_peer, short_temp_dir
from tests.integration.sshd import SshServer, descendants, require_tool
from tests.integration.test_ssh_sudo import doc_block

pytestmark = [pytest.mark.real_sshd]

TIMEOUT = 15.0
# A keeper thaws within a few seconds of its deadline (one socat attempt, ~0.1 s here).
SLACK = 8.0


def new_token() -> str:
    return secrets.token_hex(8)


def marker_dir(uid: int) -> Path:
    """Where the keeper of user `uid` keeps its markers (transport/keeper.py)."""
    return Path("/run/qgadash-keeper-0") if uid == 0 else Path(f"/tmp/qgadash-keeper-{uid}")


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


async def wait_for(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `check` until it is true; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def wait_for_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.2)


@dataclass
class Armed:
    """Tokens armed by a test; at teardown their keepers are stopped and markers removed
    here, without SSH (the hypervisor is this machine), whatever state the test left."""

    holds: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, directory: Path, token: str) -> str:
        self.holds.append((directory, token))
        return token

    def pid(self, directory: Path, token: str) -> int | None:
        try:
            return int((directory / f"{token}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def clean(self) -> None:
        for directory, token in self.holds:
            pid = self.pid(directory, token)
            (directory / token).unlink(missing_ok=True)
            if pid is not None and alive(pid):
                with contextlib.suppress(OSError):
                    if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGTERM)
            for suffix in (".pid", ".last", ".sh"):
                (directory / f"{token}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def armed() -> Iterator[Armed]:
    holds = Armed()
    yield holds
    holds.clean()


@pytest.fixture
async def sim() -> AsyncIterator[SimFleet]:
    require_tool("socat", "socat")
    directory = short_temp_dir("qk-sim-")
    vms = [SimVm(f"vm{i}", make_profile(i)) for i in range(2)]
    try:
        async with SimFleet(directory, vms) as fleet:
            yield fleet
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def freeze(fleet: SimFleet, name: str) -> None:
    fleet.agent(name).handle({"execute": "guest-fsfreeze-freeze"})
    assert fleet.agent(name).frozen


def sshd_children(server: SshServer) -> list[int]:
    """The per-connection sshd processes of `server` (never a keeper it started)."""
    found = []
    for pid in descendants(server.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                found.append(pid)
    return found


@pytest.mark.parametrize("via", ["socket", "exec"])
async def test_armed_keeper_thaws_a_frozen_guest_by_its_deadline(
    sshd: SshServer, sim: SimFleet, armed: Armed, via: str
) -> None:
    freeze(sim, "vm0")
    hv = SshHypervisor("hv1", sshd.target(), via=via)
    keeper = hv.keeper
    assert isinstance(keeper, RemoteThawKeeper)
    token = armed.add(marker_dir(0), new_token())
    try:
        assert await keeper.probe(TIMEOUT) is None
        started = time.monotonic()
        kind = await keeper.arm(str(sim.socket_path("vm0")), token, 2, TIMEOUT)
        assert kind == "nohup"
        assert await keeper.pending(token, TIMEOUT)
        pid = armed.pid(marker_dir(0), token)
        assert pid is not None and alive(pid)
        # From here on this process only watches (the simulator answers the keeper).
        await wait_for(lambda: not sim.agent("vm0").frozen, 2 + SLACK, "the keeper's thaw")
        thawed_after = time.monotonic() - started
        assert thawed_after >= 1.5, f"thawed {thawed_after:.1f} s after a 2 s arm"
        assert not sim.agent("vm1").frozen  # untouched, and never frozen
        # Fired and confirmed: the marker is gone, the keeper process ended.
        await wait_for_async(
            lambda: _not(keeper.pending(token, TIMEOUT)), SLACK, "the marker removed"
        )
        await wait_for(lambda: not alive(pid), SLACK, "the keeper process ended")
    finally:
        await hv.close()


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_disarmed_keeper_never_thaws(sshd: SshServer, sim: SimFleet, armed: Armed) -> None:
    freeze(sim, "vm0")
    hv = SshHypervisor("hv1", sshd.target())
    keeper = hv.keeper
    assert keeper is not None
    token = armed.add(marker_dir(0), new_token())
    try:
        started = time.monotonic()
        assert await keeper.arm(str(sim.socket_path("vm0")), token, 2, TIMEOUT) == "nohup"
        pid = armed.pid(marker_dir(0), token)
        assert pid is not None and alive(pid)
        await keeper.disarm(token, TIMEOUT)
        assert not await keeper.pending(token, TIMEOUT)
        await keeper.disarm(token, TIMEOUT)  # twice is fine
        # The sleeping keeper was stopped, not left to look at its marker later.
        await wait_for(lambda: not alive(pid), SLACK, "the disarmed keeper process ended")
        assert not list(marker_dir(0).glob(f"{token}*"))
        # Past the deadline (and the slack a live keeper would have had): still frozen.
        while time.monotonic() - started < 2 + 3:
            assert sim.agent("vm0").frozen
            await asyncio.sleep(0.1)
        assert sim.agent("vm0").frozen
    finally:
        await hv.close()


async def test_keeper_thaws_after_the_ssh_connection_is_cut(
    sshd_factory: Callable[..., SshServer], sim: SimFleet, armed: Armed
) -> None:
    server = sshd_factory()
    freeze(sim, "vm1")
    hv = SshHypervisor("hv1", server.target())
    keeper = hv.keeper
    assert keeper is not None
    token = armed.add(marker_dir(0), new_token())
    try:
        started = time.monotonic()
        assert await keeper.arm(str(sim.socket_path("vm1")), token, 3, TIMEOUT) == "nohup"
        # Cut right after arming: kill the sshd processes serving our connection.
        serving = sshd_children(server)
        assert serving
        for pid in serving:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: not hv.connection.connected, 10, "the connection noticed as cut")
        assert sim.agent("vm1").frozen
        await wait_for(lambda: not sim.agent("vm1").frozen, 3 + SLACK, "the keeper's thaw")
        assert time.monotonic() - started >= 2.5
        # A new connection sees the hold settled by the keeper.
        await wait_for_async(
            lambda: _not(keeper.pending(token, TIMEOUT)), SLACK, "the marker removed"
        )
        assert hv.connection.connected_count == 2
    finally:
        await hv.close()


async def test_probe_names_what_is_missing(sshd: SshServer) -> None:
    wrapper = "/nonexistent/qgadash-agent-connect"
    hv = SshHypervisor("pve1", sshd.target(), via="sudo", sudo_wrapper=wrapper)
    keeper = hv.keeper
    assert keeper is not None
    try:
        why = await keeper.probe(TIMEOUT)
        assert why is not None
        assert why.startswith("pve1 (127.0.0.1): ")
        assert f"the sudo wrapper {wrapper} does not exist" in why
        assert "\n" not in why
        # Asked again before the next confirmation: answered from the cache, no command.
        runs = 0
        real_run = hv.connection.run

        async def counting_run(
            command: str, timeout: float = TIMEOUT
        ) -> asyncssh.SSHCompletedProcess:
            nonlocal runs
            runs += 1
            return await real_run(command, timeout)

        hv.connection.run = counting_run  # type: ignore[method-assign]
        assert await keeper.probe(TIMEOUT) == why
        assert runs == 0
    finally:
        await hv.close()


async def test_probe_says_when_the_hypervisor_cannot_be_asked(sshd: SshServer) -> None:
    hv = SshHypervisor("hv9", sshd.target(), connect_timeout=2)
    keeper = hv.keeper
    assert keeper is not None
    await hv.close()
    why = await keeper.probe(TIMEOUT)
    assert why is not None and why.startswith("hv9: ")


async def test_an_arm_whose_answer_is_lost_is_disarmed(sshd: SshServer, armed: Armed) -> None:
    """The arm script ran but its answer never came: the caller believes nothing is armed,
    so the keeper must go rather than thaw at a deadline nobody holds."""
    hv = SshHypervisor("hv1", sshd.target())
    keeper = hv.keeper
    assert isinstance(keeper, RemoteThawKeeper)
    token = armed.add(marker_dir(0), new_token())
    real_run = hv.connection.run

    async def answer_lost(command: str, timeout: float = TIMEOUT) -> asyncssh.SSHCompletedProcess:
        result = await real_run(command, timeout)
        assert isinstance(result.stdout, bytes)  # the connection's run collects bytes
        if b"armed nohup" in result.stdout:
            raise AgentTimeout("hv1: a command on 127.0.0.1 took over 15 s")
        return result

    hv.connection.run = answer_lost  # type: ignore[method-assign]
    try:
        with pytest.raises(AgentTimeout, match=r"\(arming a thaw keeper\)$"):
            await keeper.arm("/run/qgadash-test-nothing.sock", token, 60, TIMEOUT)
        pid = armed.pid(marker_dir(0), token)
        assert pid is not None  # it had started
        await wait_for(lambda: not alive(pid), SLACK, "the unknown keeper stopped")
        assert not await keeper.pending(token, TIMEOUT)
    finally:
        await hv.close()


def test_routes_pass_addresses_as_data() -> None:
    assert ThawRoute("socat").arguments("/run/qga/a b:c.sock") == [
        "socat",
        "UNIX-CONNECT:/run/qga/a\\ b\\:c.sock",
        "",
        "",
    ]
    assert ThawRoute("socat").arguments("/var/run/qemu-server/101.qga")[3] == "101"
    assert ThawRoute("sudo", "/w").arguments("/var/run/qemu-server/101.qga") == [
        "sudo",
        "/w",
        "/var/run/qemu-server/101.qga",
        "101",
    ]
    assert ThawRoute("sudo", "/w").arguments("tcp:[::1]:4444")[:2] == ["socat", "TCP:[::1]:4444"]
    assert ThawRoute("virsh", "qemu:///system").arguments("web-1") == [
        "virsh",
        "qemu:///system",
        "web-1",
        "",
    ]
    with pytest.raises(ValueError, match="unexpected character"):
        ThawRoute("socat").arguments("tcp:evil,fork:1")


async def test_arm_refuses_a_token_that_is_not_one(sshd: SshServer) -> None:
    hv = SshHypervisor("hv1", sshd.target())
    keeper = hv.keeper
    assert keeper is not None
    try:
        for token in ("../../etc/passwd", "ABCDEF0123456789", "0123"):
            with pytest.raises(ValueError, match="16 lowercase hex"):
                await keeper.arm("/run/x.sock", token, 5, TIMEOUT)
    finally:
        await hv.close()


# -- via = "sudo": an unprivileged SSH user, root-only sockets -----------------------


@dataclass
class SudoUser:
    name: str
    uid: int
    wrapper: Path


@pytest.fixture
def sudo_user(sim: SimFleet) -> Iterator[SudoUser]:
    """The wrapper and sudoers rule of docs/ssh.md for the simulator's directory."""
    for tool, package in (("sudo", "sudo"), ("useradd", "passwd")):
        if shutil.which(tool) is None:
            missing_peer(tool, package)
    sim.directory.chmod(0o755)
    for vm in sim.vms:
        sim.socket_path(vm.name).chmod(0o600)
    user = f"qgadash-k{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--no-user-group", "--home-dir", "/nonexistent",
         "--shell", "/bin/sh", "--password", "*", user],
        check=True,
    )  # fmt: skip
    wrapper_dir = Path(tempfile.mkdtemp(prefix="qgadash-sudo-", dir="/tmp"))
    wrapper_dir.chmod(0o755)
    wrapper = wrapper_dir / "qgadash-agent-connect"
    script, count = re.subn(
        r'^AGENT_DIRS=".*"$',
        f'AGENT_DIRS="{sim.directory}"',
        doc_block("qgadash-agent-connect"),
        flags=re.M,
    )
    assert count == 1
    wrapper.write_text(script)
    wrapper.chmod(0o755)
    rule = doc_block("qgadash-sudoers")
    rule = rule.replace(DEFAULT_SUDO_WRAPPER, str(wrapper)).replace("qgadash ALL=", f"{user} ALL=")
    sudoers = Path("/etc/sudoers.d") / f"qgadash-test-{user}"
    staged = wrapper_dir / "sudoers"
    staged.write_text(rule)
    subprocess.run(["visudo", "-c", "-q", "-f", str(staged)], check=True)
    shutil.copy(staged, sudoers)
    sudoers.chmod(0o440)
    uid = pwd.getpwnam(user).pw_uid
    try:
        yield SudoUser(user, uid, wrapper)
    finally:
        sudoers.unlink(missing_ok=True)
        shutil.rmtree(wrapper_dir, ignore_errors=True)
        shutil.rmtree(marker_dir(uid), ignore_errors=True)
        deadline = time.monotonic() + 5
        while subprocess.run(["userdel", user], capture_output=True).returncode not in (0, 6):
            if time.monotonic() > deadline:
                subprocess.run(["userdel", "--force", user], check=False)
                break
            time.sleep(0.1)


async def test_sudo_keeper_thaws_a_root_only_socket(
    sshd: SshServer, sim: SimFleet, sudo_user: SudoUser, armed: Armed
) -> None:
    freeze(sim, "vm0")
    hv = SshHypervisor(
        "pve1", sshd.target(sudo_user.name), via="sudo", sudo_wrapper=str(sudo_user.wrapper)
    )
    keeper = hv.keeper
    assert keeper is not None
    directory = marker_dir(sudo_user.uid)
    token = armed.add(directory, new_token())
    try:
        assert await keeper.probe(TIMEOUT) is None
        assert await keeper.arm(str(sim.socket_path("vm0")), token, 2, TIMEOUT) == "nohup"
        # The marker directory is the user's own and private.
        info = directory.stat()
        assert info.st_uid == sudo_user.uid and info.st_mode & 0o777 == 0o700
        assert await keeper.pending(token, TIMEOUT)
        await wait_for(lambda: not sim.agent("vm0").frozen, 2 + SLACK, "the keeper's thaw")
        await wait_for_async(
            lambda: _not(keeper.pending(token, TIMEOUT)), SLACK, "the marker removed"
        )
    finally:
        await hv.close()


async def test_keeper_refuses_a_marker_directory_that_is_not_its_own(
    sshd: SshServer, sudo_user: SudoUser
) -> None:
    directory = marker_dir(sudo_user.uid)
    directory.symlink_to("/tmp")
    hv = SshHypervisor(
        "pve1", sshd.target(sudo_user.name), via="sudo", sudo_wrapper=str(sudo_user.wrapper)
    )
    keeper = hv.keeper
    assert keeper is not None
    try:
        why = await keeper.probe(TIMEOUT)
        assert why is not None and f"{directory} is a symbolic link" in why
        with pytest.raises(AgentConnectionError, match="symbolic link"):
            await keeper.arm("/run/x.sock", new_token(), 5, TIMEOUT)
    finally:
        await hv.close()
        directory.unlink()


# -- the real qemu-ga (freeze and thaw blocked) ---------------------------------------


@pytest.mark.real_agent
async def test_keeper_request_reaches_the_real_agent_and_keeps_trying(
    sshd: SshServer, real_agent_factory: Callable[..., list[RealAgent]], armed: Armed
) -> None:
    require_tool("socat", "socat")
    (agent,) = real_agent_factory(1, ["real-1"])
    hv = SshHypervisor("hv1", sshd.target())
    keeper = hv.keeper
    assert keeper is not None
    directory = marker_dir(0)
    token = armed.add(directory, new_token())
    last = directory / f"{token}.last"
    try:
        assert await keeper.arm(str(agent.socket), token, 1, TIMEOUT) == "nohup"
        # The agent got the thaw (after the sync) and refused it, as -b makes it.
        await wait_for(
            lambda: last.exists() and "guest-fsfreeze-thaw has been disabled" in last.read_text(),
            1 + SLACK,
            "the agent's answer recorded",
        )
        assert re.search(r'^\{"return": \d+\}$', last.read_text(), re.M)  # the sync's reply
        # Not confirmed, so the thaw is still owed: the marker stays, the keeper retries.
        assert await keeper.pending(token, TIMEOUT)
        pid = armed.pid(directory, token)
        assert pid is not None and alive(pid)
        await keeper.disarm(token, TIMEOUT)
        assert not await keeper.pending(token, TIMEOUT)
        await wait_for(lambda: not alive(pid), SLACK, "the keeper stopped by disarm")
    finally:
        await hv.close()


# -- libvirt over SSH: a real guest, a real ext4 freeze -------------------------------


@pytest.mark.libvirt
@pytest.mark.guest
async def test_libvirt_keeper_thaws_a_real_guest_with_domfsthaw(
    sshd: SshServer, libvirtd: Libvirtd, guest_image: GuestImage, armed: Armed
) -> None:
    name = "lv-keeper"
    libvirtd.destroy(name)  # a leftover of an interrupted run
    kernel = guest_image.vmlinux or guest_image.bzimage
    libvirtd.start_guest(kernel, guest_image.initrd, name, ip="10.0.2.31/24")
    hv = LibvirtHypervisor("hv2", sshd.target())
    try:
        await asyncio.to_thread(libvirtd.wait_booted, name)
        found = {agent.name: agent.address for agent in await hv.discover([])}
        domain = found[name]
        keeper = hv.keeper
        assert isinstance(keeper, RemoteThawKeeper)
        assert await keeper.probe(TIMEOUT) is None
        caller = await hv.endpoint(domain).connect(10)
        assert await caller.call("guest-fsfreeze-freeze", timeout=20) >= 1  # /data, ext4
        token = armed.add(marker_dir(0), new_token())
        started = time.monotonic()
        assert await keeper.arm(domain, token, 3, TIMEOUT) == "nohup"

        async def thawed() -> bool:
            return bool(await caller.call("guest-fsfreeze-status", timeout=10) == "thawed")

        assert not await thawed()
        await wait_for_async(thawed, 3 + SLACK + 10, "virsh domfsthaw by the keeper")
        assert time.monotonic() - started >= 2.5
        await wait_for_async(
            lambda: _not(keeper.pending(token, TIMEOUT)), SLACK, "the marker removed"
        )
    finally:
        await hv.close()
        libvirtd.destroy(name)
