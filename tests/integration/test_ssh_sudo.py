"""`via = "sudo"`: an unprivileged SSH user reaches root-only agent sockets through the
wrapper and sudoers rule of docs/ssh.md, installed here verbatim (only the agent
directory, the wrapper's path and the user name changed) and removed afterwards."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent.errors import AgentConnectionError
from qgadash.transport.ssh import DEFAULT_SUDO_WRAPPER, SshHypervisor
from tests.integration.realagent import RealAgent, missing_peer
from tests.integration.sshd import SshServer

pytestmark = [pytest.mark.real_sshd, pytest.mark.real_agent]

DOC = Path(__file__).resolve().parents[2] / "docs" / "ssh.md"
STATUS = [
    ("guest-info", None),
    ("guest-get-host-name", None),
    ("guest-network-get-interfaces", None),
]


def doc_block(name: str) -> str:
    """The fenced block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in docs/ssh.md."""
    text = DOC.read_text()
    match = re.search(
        rf"<!-- {name}:begin -->\n```[a-z]*\n(.*?)```\n<!-- {name}:end -->", text, re.S
    )
    assert match, f"docs/ssh.md has no {name} block"
    return match.group(1)


@dataclass
class SudoSetup:
    user: str
    wrapper: Path
    agent_dir: Path


@pytest.fixture
def sudo_setup(real_agent_factory: Callable[..., list[RealAgent]]) -> Iterator[SudoSetup]:
    for tool, package in (("sudo", "sudo"), ("socat", "socat"), ("useradd", "passwd")):
        if shutil.which(tool) is None:
            missing_peer(tool, package)
    agents = real_agent_factory(2, ["101", "102"])
    agent_dir = agents[0].socket.parent
    # Like /var/run/qemu-server: anyone may list it, only root may open the sockets.
    agent_dir.chmod(0o755)
    for agent in agents:
        agent.socket.chmod(0o600)
    user = f"qgadash-t{secrets.token_hex(3)}"
    # "*" (not "!") as password: sshd refuses locked accounts even for key logins.
    subprocess.run(
        ["useradd", "--no-create-home", "--no-user-group", "--home-dir", "/nonexistent",
         "--shell", "/bin/sh", "--password", "*", user],
        check=True,
    )  # fmt: skip
    wrapper_dir = Path(tempfile.mkdtemp(prefix="qgadash-sudo-", dir="/tmp"))
    wrapper_dir.chmod(0o755)
    wrapper = wrapper_dir / "qgadash-agent-connect"
    script = doc_block("qgadash-agent-connect")
    script, count = re.subn(r'^AGENT_DIRS=".*"$', f'AGENT_DIRS="{agent_dir}"', script, flags=re.M)
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
    try:
        yield SudoSetup(user, wrapper, agent_dir)
    finally:
        sudoers.unlink(missing_ok=True)
        shutil.rmtree(wrapper_dir, ignore_errors=True)
        deadline = time.monotonic() + 5
        while subprocess.run(["userdel", user], capture_output=True).returncode not in (0, 6):
            # 8: the user still has processes (its sshd session ending); wait a little.
            if time.monotonic() > deadline:
                subprocess.run(["userdel", "--force", user], check=False)
                break
            time.sleep(0.1)


async def test_sudo_wrapper_reaches_root_only_sockets(
    sshd: SshServer, sudo_setup: SudoSetup
) -> None:
    target = sshd.target(sudo_setup.user)
    socket_hv = SshHypervisor("pve1", target)
    sudo_hv = SshHypervisor("pve1", target, via="sudo", sudo_wrapper=str(sudo_setup.wrapper))
    pattern = f"{sudo_setup.agent_dir}/*.sock"
    try:
        # The unprivileged user can list the sockets but not open them.
        found = await socket_hv.discover([pattern])
        assert [f.name for f in found] == ["101", "102"]
        with pytest.raises(AgentConnectionError) as caught:
            await socket_hv.endpoint(found[0].address).connect(10)
        assert str(caught.value).startswith(
            f"pve1: permission denied on {found[0].address} for {sudo_setup.user}"
        )
        assert 'via = "sudo"' in str(caught.value)
        # Through sudo and the wrapper, every status call works.
        for agent in found:
            caller = await sudo_hv.endpoint(agent.address).connect(10)
            results: list[Any] = await caller.call_many(STATUS, timeout=10)
            info, host, interfaces = results
            assert info["version"] and host["host-name"] and interfaces
            await caller.close()
    finally:
        await socket_hv.close()
        await sudo_hv.close()


async def test_sudo_wrapper_refuses_paths_outside_its_directories(
    sshd: SshServer, sudo_setup: SudoSetup
) -> None:
    hv = SshHypervisor(
        "pve1", sshd.target(sudo_setup.user), via="sudo", sudo_wrapper=str(sudo_setup.wrapper)
    )
    directory = sudo_setup.agent_dir
    try:
        for path, reason in (
            (f"{directory}/../{directory.name}/101.sock", "is not directly inside"),
            (f"{directory}/sub/../101.sock", "is not directly inside"),
            (f"{directory}/.hidden", "bad socket name"),
            (f"{directory}/1 01.sock", "unexpected character"),
            ("/etc/shadow", "is not directly inside"),
            (f"{directory}/101.log", "is not a socket"),
        ):
            with pytest.raises(AgentConnectionError, match=reason):
                await hv.endpoint(path).connect(10)
    finally:
        await hv.close()


async def test_missing_sudo_rule_says_so(sshd: SshServer, sudo_setup: SudoSetup) -> None:
    # A command the sudoers rule does not allow: sudo -n fails at once, no prompt.
    hv = SshHypervisor("pve1", sshd.target(sudo_setup.user), via="sudo", sudo_wrapper="/bin/cat")
    try:
        with pytest.raises(AgentConnectionError) as caught:
            await hv.endpoint(f"{sudo_setup.agent_dir}/101.sock").connect(10)
        message = str(caught.value)
        assert message.startswith(f"pve1: sudo -n refused /bin/cat for {sudo_setup.user}")
        assert "docs/ssh.md" in message
    finally:
        await hv.close()
