"""Real qemu-ga processes on this machine, listening on unix sockets, for integration tests.

Outside a VM the agent acts on the machine it runs on, so every agent started here
blocks the dangerous commands (protocol.md, "Running the real agent on a development
machine"): freeze, thaw, shutdown, suspend, set-time, set-vcpus, set-memory-blocks,
set-user-password and the SSH key changes (they would edit this machine's
authorized_keys). Nothing else in this module may start qemu-ga.

Self-contained on purpose (stdlib + pytest): the SSH tests, the engine tests and the
benchmarks all use it.

    agents = start_real_agents(Path(tempfile.mkdtemp()), 3)   # or the fixture:
    def test_x(real_agent_factory): agents = real_agent_factory(3)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

QEMU_GA = "/usr/sbin/qemu-ga"
BLOCKED_COMMANDS = (
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-shutdown",
    "guest-suspend-ram",
    "guest-suspend-disk",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-set-user-password",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
)
# A unix socket path must fit sun_path (108 bytes with its NUL).
_MAX_SOCKET_PATH = 107


def missing_peer(binary: str, package: str) -> None:
    """Fail (CI=true) or skip (elsewhere) a test whose real peer binary is absent."""
    message = f"{binary} not found (Debian package {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true requires every real peer", pytrace=False)
    pytest.skip(message)


def require_qemu_ga() -> str:
    path = QEMU_GA if os.access(QEMU_GA, os.X_OK) else shutil.which("qemu-ga")
    if path is None:
        missing_peer("qemu-ga", "qemu-guest-agent")
        raise AssertionError("unreachable")
    return path


@dataclass
class RealAgent:
    """One qemu-ga process serving `socket` (one client at a time, like a VM's channel)."""

    name: str
    socket: Path
    state_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate this agent (by its pid) and remove its socket; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()


def start_real_agents(
    directory: Path, count: int, names: list[str] | None = None, *, timeout: float = 10.0
) -> list[RealAgent]:
    """Start `count` agents with sockets `directory/NAME.sock`; return once all listen.

    Names default to `vm-000`, `vm-001`, ... The directory is created if needed; each
    agent gets its own state directory (`directory/NAME.state`, created beforehand as
    qemu-ga requires) and log file (`directory/NAME.log`).
    """
    binary = require_qemu_ga()
    if names is None:
        names = [f"vm-{i:03d}" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"{count} agents but {len(names)} names")
    directory.mkdir(parents=True, exist_ok=True)
    agents: list[RealAgent] = []
    try:
        for name in names:
            sock = directory / f"{name}.sock"
            if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
                raise ValueError(f"socket path too long for AF_UNIX: {sock}")
            state = directory / f"{name}.state"
            state.mkdir(exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            with (directory / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    [
                        binary,
                        "-m",
                        "unix-listen",
                        "-p",
                        str(sock),
                        "-t",
                        str(state),
                        "-b",
                        ",".join(BLOCKED_COMMANDS),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            agents.append(RealAgent(name, sock, state, process))
        _wait_listening(agents, timeout)
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return agents


def _wait_listening(agents: list[RealAgent], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(agents)
    while waiting:
        still: list[RealAgent] = []
        for agent in waiting:
            if agent.process.poll() is not None:
                log = (agent.socket.parent / f"{agent.name}.log").read_text(errors="replace")
                raise RuntimeError(f"qemu-ga for {agent.name} exited: {log.strip()[-500:]}")
            try:
                if stat.S_ISSOCK(agent.socket.stat().st_mode):
                    continue
            except FileNotFoundError:
                pass
            still.append(agent)
        waiting = still
        if waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} qemu-ga sockets not there after {timeout} s")
            time.sleep(0.01)


def short_temp_dir(prefix: str = "qga-") -> Path:
    """A fresh directory under /tmp: pytest's tmp_path is often too long for AF_UNIX."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def agent_answers(path: Path, timeout: float = 2.0) -> bool:
    """True if the agent at `path` answers guest-ping (raw socket, no qgadash code)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}')
            data = b""
            while b'"return": 4242' not in data and b'"return":4242' not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return True
    except OSError:
        return False


class MakeRealAgents(Protocol):
    """The `real_agent_factory` fixture: `make(count, names=None)`."""

    def __call__(self, count: int, names: list[str] | None = None) -> list[RealAgent]: ...


@pytest.fixture
def real_agent_factory() -> Iterator[MakeRealAgents]:
    """`make(count, names=None)` starts agents in a fresh short directory; all stop at teardown."""
    started: list[RealAgent] = []
    directories: list[Path] = []

    def make(count: int, names: list[str] | None = None) -> list[RealAgent]:
        directory = short_temp_dir()
        directories.append(directory)
        agents = start_real_agents(directory, count, names)
        started.extend(agents)
        return agents

    yield make
    for agent in started:
        agent.stop()
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
