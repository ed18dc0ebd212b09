"""The one SSH connection to a hypervisor (asyncssh), shared by all its VMs.

Opened on first use and reopened with backoff and jitter after it fails; keepalives
notice a dead host within `keepalive_interval * keepalive_count_max` seconds. Each
failure becomes a hypervisor state (unreachable, auth-failed, host-key-rejected) with a
message that names the host and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import weakref
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.public_key import get_default_public_key_algs

from qgadash.agent.errors import AgentConnectionError, AgentTimeout
from qgadash.transport.address import parse_ssh_spec
from qgadash.transport.base import HypervisorState
from qgadash.transport.ssh.hostkeys import host_key_message, known_hosts_files

# Simultaneous connection attempts to one host:port, across all links of this process:
# sshd's MaxStartups (default 10:30:100) starts dropping unauthenticated connections
# beyond 10.
CONNECTS_PER_TARGET = 4
# Exec channels are sessions and sshd allows MaxSessions (default 10) per connection;
# keep two free for discovery and diagnostics.
DEFAULT_MAX_SESSIONS = 8
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# A discovery or diagnostic command that takes longer than this is not coming back.
COMMAND_TIMEOUT = 15.0

_connect_slots: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int | None], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()

_PREFERRED_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]


def _connect_slot(host: str, port: int | None) -> asyncio.Semaphore:
    """The semaphore limiting concurrent connects to one host:port (per event loop)."""
    per_loop = _connect_slots.setdefault(asyncio.get_running_loop(), {})
    key = (host.lower(), port)
    slot = per_loop.get(key)
    if slot is None:
        slot = per_loop[key] = asyncio.Semaphore(CONNECTS_PER_TARGET)
    return slot


@dataclass(frozen=True)
class SshTarget:
    """Where a hypervisor's sshd is and how to trust and log in to it."""

    spec: str  # "[user@]host[:port]" or a ~/.ssh/config alias
    identity: str | None = None  # key file
    known_hosts: str | None = None  # file
    jump: str | None = None  # bastion, like ProxyJump


# -- the connection ------------------------------------------------------------------


class _Client(asyncssh.SSHClient):
    """Remembers the host key it was shown and tells its owner when the connection ends."""

    def __init__(self, owner: SshConnection) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHClientConnection | None = None
        self.offered: tuple[str, str, int, asyncssh.SSHKey] | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner.lost(self._conn, exc)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Called only for keys known_hosts does not trust: refuse, but remember the key
        # so the error can show its fingerprint.
        self.offered = (host, addr, port, key)
        return False


class SshConnection:
    """The one SSH connection to a hypervisor: lazy, shared, reopened with backoff."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        *,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 3.0,
        keepalive_count_max: int = 3,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self.name = name
        self.target = target
        self.user, self.host, self.port = parse_ssh_spec(target.spec)
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.max_sessions = max_sessions
        self.username = self.user or ""
        self.connected_count = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._jump: asyncssh.SSHClientConnection | None = None
        self._sessions = asyncio.Semaphore(max_sessions)
        self._connecting: asyncio.Task[asyncssh.SSHClientConnection | None] | None = None
        self._state = HypervisorState.CONNECTING
        self._error: str | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False

    @property
    def state(self) -> HypervisorState:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def where(self) -> str:
        """user@host:port as far as known (config may fill in user and port)."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{self.port or 22}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connection(self, timeout: float) -> asyncssh.SSHClientConnection:
        """The live connection, connecting first if needed; AgentConnectionError if none."""
        if self._closed:
            raise AgentConnectionError(f"{self.name}: the ssh link is closed")
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            wait = self._retry_at - loop.time()
            if wait > 0:
                raise AgentConnectionError(
                    f"{self._error or self.name + ': not connected'} (next attempt in {wait:.0f} s)"
                )
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            async with asyncio.timeout(timeout):
                # Shielded: one VM giving up must not cancel everyone's connection attempt.
                conn = await asyncio.shield(self._connecting)
        except TimeoutError:
            if self._error:
                raise AgentConnectionError(f"{self._error} (reconnecting)") from None
            raise AgentConnectionError(
                f"{self.name}: ssh connection to {self.where} not up after {timeout:g} s"
            ) from None
        if conn is None:
            raise AgentConnectionError(self._error or f"{self.name}: not connected")
        return conn

    async def _connect(self) -> asyncssh.SSHClientConnection | None:
        # "connecting" only until the first outcome: while retrying after a failure the
        # hypervisor stays unreachable (auth-failed, ...) with that failure's message.
        if self._error is None:
            self._state = HypervisorState.CONNECTING
        client = _Client(self)
        files: list[str] = []
        try:
            try:
                options, files = await self._options()
            except (OSError, ValueError, asyncssh.KeyImportError) as exc:
                self._fail(HypervisorState.AUTH_FAILED, f"{self.name}: ssh settings: {exc}")
                return None
            self.username = str(options.username)
            self.host = str(options.host)
            self.port = int(options.port) if options.port else self.port
            async with _connect_slot(self.host, self.port):
                tunnel: Any = ()
                if self.target.jump:
                    tunnel = self._jump = await self._connect_jump()
                # The spec's own host name: asyncssh resolves aliases from the options.
                conn = await asyncssh.connect(
                    parse_ssh_spec(self.target.spec)[1],
                    self.port or (),
                    options=options,
                    tunnel=tunnel,
                    client_factory=lambda: client,
                )
            await self._settle(conn)
        except asyncssh.HostKeyNotVerifiable as exc:
            self._fail(
                HypervisorState.HOST_KEY_REJECTED,
                host_key_message(
                    self.name, self.host, self.port, files, client.offered, exc.reason
                ),
            )
            return None
        except asyncssh.KeyExchangeFailed as exc:
            if "host key" not in exc.reason.lower():
                self._fail(HypervisorState.UNREACHABLE, self._unreachable_message(exc))
                return None
            # known_hosts lists only other key types for this host: a changed key too.
            self._fail(
                HypervisorState.HOST_KEY_REJECTED,
                host_key_message(self.name, self.host, self.port, files, None, exc.reason),
            )
            return None
        except asyncssh.PermissionDenied:
            self._fail(HypervisorState.AUTH_FAILED, self._auth_message())
            return None
        except _JumpFailed as exc:
            self._fail(exc.state, exc.message)
            return None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            self._fail(HypervisorState.UNREACHABLE, self._unreachable_message(exc))
            return None
        finally:
            self._connecting = None
        if self._closed:
            conn.close()
            return None
        self._conn = conn
        self._sessions = asyncio.Semaphore(self.max_sessions)
        self._state = HypervisorState.CONNECTED
        self._error = None
        self._failures = 0
        self.connected_count += 1
        return conn

    async def _options(
        self, spec: SshTarget | None = None
    ) -> tuple[asyncssh.SSHClientConnectionOptions, list[str]]:
        """asyncssh's options for `spec` (default: the target), and the known_hosts files."""
        target = spec or self.target
        user, host, port = parse_ssh_spec(target.spec)
        kwargs: dict[str, Any] = {
            # () = ~/.ssh/config if readable (the options default, None, reads nothing).
            "config": (),
            "host": host,
            "port": port or (),
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            # OpenSSH's ServerAliveCountMax: dead after interval * count of silence.
            # asyncssh gives up one interval later, hence the - 1.
            "keepalive_count_max": max(1, self.keepalive_count_max - 1),
        }
        if user:
            kwargs["username"] = user
        identity = self.target.identity
        if identity:
            kwargs["client_keys"] = [os.path.expanduser(identity)]
        if self.target.known_hosts:
            kwargs["known_hosts"] = os.path.expanduser(self.target.known_hosts)
        options: asyncssh.SSHClientConnectionOptions
        options = await asyncssh.SSHClientConnectionOptions.construct(**kwargs)
        files = known_hosts_files(options.known_hosts) or ["~/.ssh/known_hosts"]
        existing = [f for f in files if os.path.isfile(os.path.expanduser(f))]
        changes: dict[str, Any] = {}
        if options.known_hosts is None or existing != files:
            # `UserKnownHostsFile none` would turn checking off: never. A missing file
            # trusts nothing (asyncssh would fail to open it).
            changes["known_hosts"] = [os.path.expanduser(f) for f in existing] or b""
        if not options.config.get("HostKeyAlgorithms"):
            # Like OpenSSH: prefer the key types known_hosts has for this host, but allow
            # the others, so a changed key type is refused by the host key check (with
            # the file and line) rather than by a key exchange that just hangs up.
            changes["server_host_key_algs"] = "+" + ",".join(
                alg.decode() for alg in get_default_public_key_algs()
            )
        if not options.config.get("Ciphers"):
            # AES-GCM first: one AEAD call per packet in C (AES-NI), where asyncssh's
            # chacha20-poly1305 default costs several Python-level steps per packet; every
            # agent request and reply is a packet. Measured: see docs/benchmarks-ssh.md.
            changes["encryption_algs"] = _PREFERRED_CIPHERS + [
                alg.decode()
                for alg in get_default_encryption_algs()
                if alg.decode() not in _PREFERRED_CIPHERS
            ]
        if changes:
            options = await asyncssh.SSHClientConnectionOptions.construct(options, **changes)
        return options, files

    async def _connect_jump(self) -> asyncssh.SSHClientConnection:
        assert self.target.jump is not None
        jump = SshTarget(
            self.target.jump, identity=self.target.identity, known_hosts=self.target.known_hosts
        )
        client = _Client(self)
        files: list[str] = []
        try:
            options, files = await self._options(jump)
            return await asyncssh.connect(
                parse_ssh_spec(jump.spec)[1], options=options, client_factory=lambda: client
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            _, host, port = parse_ssh_spec(self.target.jump)
            message = host_key_message(
                f"{self.name} (jump host)", host, port, files, client.offered, exc.reason
            )
            raise _JumpFailed(HypervisorState.HOST_KEY_REJECTED, message) from None
        except asyncssh.PermissionDenied:
            raise _JumpFailed(
                HypervisorState.AUTH_FAILED,
                f"{self.name}: ssh login to jump host {self.target.jump} refused "
                "(no key offered was accepted)",
            ) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise _JumpFailed(
                HypervisorState.UNREACHABLE,
                f"{self.name}: jump host {self.target.jump}: {describe(exc)}",
            ) from None

    async def _settle(self, conn: asyncssh.SSHClientConnection) -> None:
        """Run one command so sshd turns on TCP_NODELAY (see docs/ssh.md, "40 ms")."""
        # OpenSSH sets TCP_NODELAY once, when the first session starts a command, and
        # never unsets it; forwarded channels alone leave Nagle on and stall ~40 ms
        # whenever two replies are in flight. A restricted account may refuse the
        # command; that still started a session, so its outcome does not matter.
        with contextlib.suppress(asyncssh.ChannelOpenError, asyncssh.ProcessError):
            await conn.run("true", check=False, timeout=self.connect_timeout)

    def _fail(self, state: HypervisorState, message: str) -> None:
        self._state = state
        self._error = message
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        self._retry_at = asyncio.get_running_loop().time() + delay * random.uniform(0.5, 1.0)
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def _auth_message(self) -> str:
        tried = []
        if self.target.identity:
            tried.append(f"identity {self.target.identity}")
        else:
            tried.append("~/.ssh/config IdentityFile or ~/.ssh/id_*")
        if os.environ.get("SSH_AUTH_SOCK"):
            tried.append("ssh-agent keys")
        return (
            f"{self.name}: ssh login as {self.where} refused: no key offered was accepted "
            f"(tried {', '.join(tried)}); check authorized_keys for {self.username or 'the user'}"
        )

    def _unreachable_message(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return (
                f"{self.name}: no ssh handshake from {self.where} within {self.connect_timeout:g} s"
            )
        if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError)):
            return (
                f"{self.name}: {self.where} closed the connection before login "
                "(sshd's MaxStartups, a firewall, or sshd restarting?)"
            )
        return f"{self.name}: cannot reach {self.where}: {describe(exc)}"

    def lost(self, conn: asyncssh.SSHClientConnection, exc: Exception | None) -> None:
        """asyncssh says `conn` ended: the next use reconnects (now, then with backoff)."""
        if conn is not self._conn:
            return
        self._conn = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None
        if self._closed:
            return
        self._state = HypervisorState.UNREACHABLE
        if exc is not None and "keepalive" in str(exc):
            silent = self.keepalive_interval * self.keepalive_count_max
            self._error = (
                f"{self.name}: {self.where} stopped answering (no keepalive reply in {silent:g} s)"
            )
        elif exc is not None:
            self._error = f"{self.name}: connection to {self.where} lost: {describe(exc)}"
        else:
            self._error = f"{self.name}: {self.where} closed the connection"
        # Reconnect at the next use; the backoff applies if that attempt fails.
        self._retry_at = 0.0

    async def session_slot(self, timeout: float) -> asyncio.Semaphore:
        """Take one of the connection's session slots (for exec channels)."""
        sessions = self._sessions
        try:
            async with asyncio.timeout(timeout):
                await sessions.acquire()
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: all {self.max_sessions} ssh session slots are busy "
                '(sshd\'s MaxSessions limits exec/sudo channels; use via = "socket" or '
                "per-poll sessions)"
            ) from None
        return sessions

    async def run(
        self, command: str, timeout: float = COMMAND_TIMEOUT
    ) -> asyncssh.SSHCompletedProcess:
        """Run a short command on the hypervisor and collect its output (bytes)."""
        conn = await self.connection(timeout)
        sessions = await self.session_slot(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await conn.run(command, check=False, encoding=None)
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: a command on {self.host} took over {timeout:g} s"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            raise AgentConnectionError(
                f"{self.name}: sshd on {self.host} refused a session ({exc.reason})"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise AgentConnectionError(self._error or f"{self.name}: {describe(exc)}") from None
        finally:
            sessions.release()

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        for conn in (self._conn, self._jump):
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await conn.wait_closed()
        self._conn = self._jump = None


class _JumpFailed(Exception):
    def __init__(self, state: HypervisorState, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


def describe(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sshd running on that port?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
