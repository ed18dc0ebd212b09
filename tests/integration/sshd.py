"""A real OpenSSH sshd on 127.0.0.1 for integration tests, with its own keys.

Each server lives in its own directory (host key, authorized_keys, config, pid file,
log, known_hosts for the client) and listens on a random free port. The client key is
generated once per test session. Servers are stopped by pid at teardown, together with
every per-connection sshd they forked (each of those calls setsid(), so a process
group signal would miss them).

Register with `pytest_plugins = ["tests.integration.sshd"]`. Fixtures:
- `ssh_client_key`: (private key path, public key line), session-wide;
- `sshd`: one server for the whole session (do not pause or restart it);
- `sshd_factory`: `make()` starts a private server you may pause, resume or restart.
Running sshd needs root here (privilege separation, `/run/sshd`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qgadash.transport.ssh import SshTarget
from tests.integration.realagent import missing_peer

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"


def require_sshd() -> None:
    if not os.access(SSHD, os.X_OK):
        missing_peer(SSHD, "openssh-server")
    if shutil.which(SSH_KEYGEN) is None:
        missing_peer(SSH_KEYGEN, "openssh-client")
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the sshd fixture needs root (privilege separation)", pytrace=False)
        pytest.skip("the sshd fixture needs root")


def require_tool(tool: str, package: str) -> None:
    """A tool the hypervisor side needs (socat for via = "exec"): fail under CI=true."""
    if shutil.which(tool) is None:
        missing_peer(tool, package)


def generate_key(path: Path, comment: str = "qgadash-test", key_type: str = "ed25519") -> str:
    """An unencrypted key (ed25519 unless told) at `path`; returns the public key line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class SshServer:
    """One sshd; `known_hosts` and `client_key` are what a client needs to log in."""

    directory: Path
    client_key: Path
    client_public: str
    port: int = 0
    host: str = "127.0.0.1"
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _paused: list[int] = field(default_factory=list, repr=False)

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        return self.directory / "authorized_keys"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spec(self, user: str = "root") -> str:
        return f"{user}@{self.host}:{self.port}"

    def target(self, user: str = "root", **kwargs: str | None) -> SshTarget:
        """A target for this server, trusting its host key and using the session's key."""
        options: dict[str, str | None] = {
            "identity": str(self.client_key),
            "known_hosts": str(self.known_hosts),
        }
        options.update(kwargs)
        return SshTarget(self.spec(user), **options)

    def prepare(self) -> None:
        """Keys, authorized_keys, config and known_hosts; the directory must be traversable
        by other users (sshd reads authorized_keys as the user logging in)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        if not self.host_key.exists():
            generate_key(self.host_key, "qgadash-test-host")
        host_public = self.host_key.with_suffix(".pub").read_text().split()
        self.authorized_keys.write_text(self.client_public + "\n")
        self.authorized_keys.chmod(0o644)
        if not self.port:
            self.port = free_port()
        key_type, key_data = host_public[0], host_public[1]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {key_type} {key_data}\n")
        # sshd keeps the first value it reads for a keyword: extra settings go first.
        self.config.write_text(
            f"""\
{self.extra_config}
Port {self.port}
ListenAddress {self.host}
HostKey {self.host_key}
PidFile {self.directory}/sshd.pid
AuthorizedKeysFile {self.authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
LogLevel VERBOSE
"""
        )

    def start(self, timeout: float = 10.0) -> None:
        require_sshd()
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.prepare()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-1000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd not listening on {self.port}: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the listener and every connection it serves (like a hypervisor dying)."""
        if self.process is None:
            return
        pids = [self.process.pid, *descendants(self.process.pid)]
        # SIGKILL works on stopped processes too; nothing here needs a clean exit.
        _signal(pids, signal.SIGKILL)
        self.process.wait(10)
        self.process = None
        self._paused = []

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the listener and its connections: TCP stays up, nothing answers."""
        assert self.process is not None
        pids = [self.process.pid, *descendants(self.process.pid)]
        _signal(pids, signal.SIGSTOP)
        self._paused = pids

    def resume(self) -> None:
        _signal(self._paused, signal.SIGCONT)
        self._paused = []

    def client_connections(self, pid: int | None = None) -> int:
        """Established TCP connections from process `pid` (default: this one) to the port."""
        pid = os.getpid() if pid is None else pid
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( dport = :{self.port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def _new_server(key: tuple[Path, str], extra_config: str = "") -> SshServer:
    directory = Path(tempfile.mkdtemp(prefix="qgadash-sshd-", dir="/tmp"))
    server = SshServer(directory, key[0], key[1], extra_config=extra_config)
    server.start()
    return server


@pytest.fixture(scope="session")
def ssh_client_key() -> Iterator[tuple[Path, str]]:
    require_sshd()
    directory = Path(tempfile.mkdtemp(prefix="qgadash-sshkey-", dir="/tmp"))
    directory.chmod(0o755)
    key = directory / "id_ed25519"
    public = generate_key(key, "qgadash-test-client")
    yield key, public
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(ssh_client_key: tuple[Path, str]) -> Iterator[SshServer]:
    server = _new_server(ssh_client_key)
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def sshd_factory(ssh_client_key: tuple[Path, str]) -> Iterator[Callable[..., SshServer]]:
    """`make(extra_config="")` starts a private sshd; stopped and removed at teardown."""
    servers: list[SshServer] = []

    def make(extra_config: str = "") -> SshServer:
        server = _new_server(ssh_client_key, extra_config)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.resume()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
