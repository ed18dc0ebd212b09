"""Agents on a remote hypervisor, reached over one SSH connection (asyncssh).

One connection per hypervisor, shared by all its VMs, opened on first use and
reopened with backoff and jitter after it fails; keepalives notice a dead host within
`keepalive_interval * keepalive_count_max` seconds. Each VM session is one channel on
that connection:

- `via="socket"`: a direct-streamlocal channel to the agent socket (stock sshd allows
  it; MaxSessions does not count these);
- `via="exec"`: `socat - UNIX-CONNECT:PATH` in an exec channel (a session: counted by
  MaxSessions, so at most `max_sessions` at once);
- `via="sudo"`: the same through `sudo -n WRAPPER PATH`, a root-owned script that
  checks the path before it runs socat (docs/ssh.md has the script and sudoers rule).

Host keys are always verified against known_hosts (the target's file, else
~/.ssh/config's UserKnownHostsFile, else ~/.ssh/known_hosts); an unknown or changed key
is refused with a message naming the host, the file and the line. When a channel will
not open, a short shell test on the hypervisor finds out why (no socket, permission,
forwarding refused) so the operator reads a cause, not "open failed".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import socket
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.public_key import get_default_public_key_algs

from qgadash.agent.client import AgentCaller, AgentClient, AgentTraits, NoReplyOutcome, Request
from qgadash.agent.codec import DEFAULT_MAX_REPLY
from qgadash.agent.errors import AgentConnectionError, AgentError, AgentTimeout
from qgadash.transport.address import parse_ssh_spec, parse_tcp_address
from qgadash.transport.base import DiscoveredAgent, HypervisorState, ThawKeeper
from qgadash.transport.discovery import vm_name_for_socket
from qgadash.transport.exec_stream import ChannelStream, ProcessStream
from qgadash.transport.shell import (
    diagnose_command,
    discovery_script,
    parse_discovery_output,
    sh_command,
    socat_unix_address,
)

VIAS = ("socket", "exec", "sudo")
DEFAULT_SUDO_WRAPPER = "/usr/local/sbin/qgadash-agent-connect"
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


# -- host keys -----------------------------------------------------------------------


def _known_hosts_files(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, os.PathLike))]
    return []


def _display_path(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + "/") else path


def matching_known_hosts_lines(
    files: Sequence[str], host: str, addr: str | None, port: int | None
) -> list[tuple[str, int]]:
    """(file, line number) of every known_hosts line that names this host (hashed or not)."""
    found: list[tuple[str, int]] = []
    for name in files:
        path = os.path.expanduser(name)
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                entries = asyncssh.import_known_hosts(text)
                matched = asyncssh.match_known_hosts(entries, host, addr or "", port)
            except (ValueError, asyncssh.KeyImportError):
                continue
            if any(matched[:3]):
                found.append((path, number))
    return found


def host_key_message(
    name: str,
    host: str,
    port: int | None,
    files: Sequence[str],
    offered: tuple[str, str, int, asyncssh.SSHKey] | None,
    reason: str,
) -> str:
    """Plain words for a refused host key: which host, which file and line, what to do."""
    shown_host = host if port in (None, 22) else f"[{host}]:{port}"
    fingerprint = ""
    addr: str | None = None
    if offered is not None:
        host, addr, key_port, key = offered
        port = key_port
        fingerprint = f" (it offered {key.get_algorithm()} {key.get_fingerprint('sha256')})"
    match_port = None if port in (None, 22) else port
    lines = matching_known_hosts_lines(files, host, addr, match_port)
    if "revoked" in reason:
        return f"{name}: ssh host key for {shown_host} is revoked in known_hosts{fingerprint}"
    if lines:
        where = ", ".join(f"{_display_path(f)} line {n}" for f, n in lines)
        return (
            f"{name}: ssh host key for {shown_host} does not match {where}{fingerprint}; "
            "if the key changed on purpose, replace that line after checking the new key"
        )
    shown_files = ", ".join(
        _display_path(os.path.expanduser(f))
        + ("" if os.path.isfile(os.path.expanduser(f)) else " (no such file)")
        for f in files
    )
    return (
        f"{name}: ssh host key for {shown_host} is unknown: not in {shown_files}{fingerprint}; "
        "check the fingerprint with the hypervisor's admin, then add the key to that file"
    )


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
        files = _known_hosts_files(options.known_hosts) or ["~/.ssh/known_hosts"]
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
                f"{self.name}: jump host {self.target.jump}: {_describe(exc)}",
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
        return f"{self.name}: cannot reach {self.where}: {_describe(exc)}"

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
            self._error = f"{self.name}: connection to {self.where} lost: {_describe(exc)}"
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
            raise AgentConnectionError(self._error or f"{self.name}: {_describe(exc)}") from None
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sshd running on that port?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__


# -- one VM's session ----------------------------------------------------------------

_Opened = TypeVar("_Opened")


async def _open_within(
    opening: Awaitable[_Opened], timeout: float, close: Callable[[_Opened], object]
) -> _Opened:
    """Await a channel open for at most `timeout` s; one given up on is closed once it opens.

    A channel-open request cannot be taken back. Cancelled mid-open, asyncssh still marks
    the channel open when sshd confirms it later (a hung sshd that comes back does): a
    channel nobody owns, open for as long as the connection lives. To an agent socket,
    which serves one client, that locks the VM out until the connection ends.
    """
    task = asyncio.ensure_future(opening)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(task)
    except BaseException:
        task.add_done_callback(lambda done: _close_late(done, close))
        raise


def _close_late(task: asyncio.Future[_Opened], close: Callable[[_Opened], object]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    with contextlib.suppress(Exception):
        close(task.result())


class RemoteAgentCaller:
    """The agent client of one channel, with the hypervisor's state in its errors.

    `closed` turns True as soon as the channel closes (agent gone, connection lost),
    so the engine reconnects before the next call rather than failing it.
    """

    def __init__(
        self, client: AgentClient, stream: ChannelStream | ProcessStream, link: SshConnection
    ) -> None:
        self._client = client
        self._stream = stream
        self._link = link

    @property
    def closed(self) -> bool:
        return self._client.closed or self._stream.closing

    @property
    def note(self) -> str | None:
        """How the agent was adapted to (see `AgentClient.note`)."""
        return self._client.note

    async def call(self, name: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        try:
            return await self._client.call(name, args, timeout=timeout)
        except AgentConnectionError as exc:
            raise self._explain(exc) from None

    async def call_many(
        self, requests: Sequence[Request], *, timeout: float
    ) -> list[Any | AgentError]:
        try:
            return await self._client.call_many(requests, timeout=timeout)
        except AgentConnectionError as exc:
            raise self._explain(exc) from None

    async def call_many_raw(
        self, requests: Sequence[Request], *, timeout: float, read_only: bool = False
    ) -> list[Any | bytes | AgentError]:
        """Undecoded successes, as `AgentClient.call_many_raw`: the poller's reply cache
        then spares remote polls the decoding of what did not change, as local ones."""
        try:
            return await self._client.call_many_raw(requests, timeout=timeout, read_only=read_only)
        except AgentConnectionError as exc:
            raise self._explain(exc) from None

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome:
        try:
            return await self._client.call_no_reply(name, args, grace=grace)
        except AgentConnectionError as exc:
            raise self._explain(exc) from None

    async def close(self) -> None:
        await self._client.close()

    def _explain(self, exc: AgentConnectionError) -> AgentConnectionError:
        if not self._link.connected and self._link.error:
            return AgentConnectionError(self._link.error)
        return exc


class SshEndpoint:
    """One VM's agent on a hypervisor reached over SSH."""

    def __init__(self, link: SshHypervisor, address: str) -> None:
        self._link = link
        self.address = address
        self.traits = AgentTraits()  # what the agent taught earlier channels
        self._tcp = parse_tcp_address(address)

    @property
    def label(self) -> str:
        return f"{self._link.name}:{self.address}"

    async def connect(self, timeout: float) -> AgentCaller:
        link = self._link
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await link.connection.connection(timeout)
        remaining = max(0.1, deadline - loop.time())
        stream: ChannelStream | ProcessStream
        if self._tcp is not None:
            stream = await self._open_tcp(conn, remaining)
        elif link.via == "socket":
            stream = await self._open_socket(conn, remaining)
        else:
            stream = await self._open_exec(conn, remaining)
        client = AgentClient(stream, max_reply=link.max_reply, traits=self.traits)
        if isinstance(stream, ChannelStream):
            # A forwarded socket: the client syncs before its first request, and a poll's
            # requests ride along with that sync, one round trip less for every per-poll
            # session. (Its errors are explained by RemoteAgentCaller like any call's.)
            return RemoteAgentCaller(client, stream, link.connection)
        try:
            # socat behind exec/sudo: its failures (not installed, no socket, sudo
            # refused) show up here and are explained from its exit status and stderr.
            await client.sync(max(0.1, deadline - loop.time()))
        except AgentError as exc:
            await client.close()
            if isinstance(stream, ProcessStream) and not isinstance(exc, AgentTimeout):
                raise await self._exec_failure(stream) from None
            if isinstance(exc, AgentConnectionError):
                raise RemoteAgentCaller(client, stream, link.connection)._explain(exc) from None
            raise
        except BaseException:
            await client.close()  # cancelled: the channel must not stay open
            raise
        return RemoteAgentCaller(client, stream, link.connection)

    async def _open_socket(
        self, conn: asyncssh.SSHClientConnection, timeout: float
    ) -> ChannelStream:
        try:
            reader, writer = await _open_within(
                conn.open_unix_connection(self.address, encoding=None),
                timeout,
                lambda opened: opened[1].close(),
            )
        except TimeoutError:
            raise AgentTimeout(
                f"{self.label}: sshd did not open a channel within {timeout:g} s"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            raise await self._why_not(exc) from None
        except (OSError, asyncssh.Error) as exc:
            raise AgentConnectionError(
                self._link.connection.error or f"{self.label}: {_describe(exc)}"
            ) from None
        return ChannelStream(reader, writer)

    async def _open_tcp(self, conn: asyncssh.SSHClientConnection, timeout: float) -> ChannelStream:
        assert self._tcp is not None
        host, port = self._tcp
        try:
            reader, writer = await _open_within(
                conn.open_connection(host, port, encoding=None),
                timeout,
                lambda opened: opened[1].close(),
            )
        except TimeoutError:
            raise AgentTimeout(f"{self.label}: no channel within {timeout:g} s") from None
        except asyncssh.ChannelOpenError as exc:
            raise AgentConnectionError(
                f"{self._link.name}: cannot reach {host}:{port} from the hypervisor "
                f"({exc.reason}; refused, or AllowTcpForwarding is off)"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise AgentConnectionError(f"{self.label}: {_describe(exc)}") from None
        return ChannelStream(reader, writer)

    def _exec_command(self) -> str:
        socat = "socat - " + shlex.quote(socat_unix_address(self.address))
        if self._link.via == "sudo":
            return f"sudo -n {shlex.quote(self._link.sudo_wrapper)} {shlex.quote(self.address)}"
        return "exec " + socat

    async def _open_exec(self, conn: asyncssh.SSHClientConnection, timeout: float) -> ProcessStream:
        link = self._link.connection
        sessions = await link.session_slot(timeout)
        try:
            process = await _open_within(
                conn.create_process(self._exec_command(), encoding=None),
                timeout,
                lambda opened: opened.close(),
            )
        except TimeoutError:
            sessions.release()
            raise AgentTimeout(
                f"{self.label}: sshd did not start socat within {timeout:g} s"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            sessions.release()
            raise AgentConnectionError(
                f"{self._link.name}: sshd refused another session ({exc.reason}); MaxSessions "
                "(default 10) limits exec/sudo channels per connection"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            sessions.release()
            raise AgentConnectionError(link.error or f"{self.label}: {_describe(exc)}") from None
        except BaseException:
            sessions.release()  # cancelled mid-open: the slot must not leak
            raise
        return ProcessStream(process, sessions.release)

    async def _exec_failure(self, stream: ProcessStream) -> AgentConnectionError:
        status, stderr = await stream.failure()
        name, path = self._link.name, self.address
        user = self._link.connection.username or "the ssh user"
        low = stderr.lower()
        via = self._link.via
        if via == "sudo" and "sudo:" in low:
            if "password is required" in low or "not allowed" in low or "may not run" in low:
                return AgentConnectionError(
                    f"{name}: sudo -n refused {self._link.sudo_wrapper} for {user} "
                    f"({_last_line(stderr)}); install the sudoers rule from docs/ssh.md"
                )
            if "command not found" in low or "no such file" in low:
                return AgentConnectionError(
                    f"{name}: {self._link.sudo_wrapper} is not installed on "
                    f"{self._link.connection.host} (see docs/ssh.md)"
                )
        if status == 127 or "socat: not found" in low or "socat: command not found" in low:
            return AgentConnectionError(
                f"{name}: socat is not installed on {self._link.connection.host}"
            )
        if "refused:" in low:
            return AgentConnectionError(f"{name}: {_last_line(stderr)}")
        if "no such file" in low:
            return AgentConnectionError(f"{name}: no agent socket at {path}")
        if "permission denied" in low:
            return AgentConnectionError(f"{name}: permission denied on {path} for {user}")
        if "connection refused" in low:
            if self._link.via == "exec":
                # socat says the same for a plain file; the shell test tells them apart.
                verdict = await self._diagnose()
                if verdict is not None and verdict.split()[0] not in ("usable", "listening"):
                    return self._verdict_error(verdict, "connection refused")
            return AgentConnectionError(f"{name}: nothing listens on {path} (its VM is gone?)")
        if "resource temporarily unavailable" in low:
            return AgentConnectionError(f"{name}: {path} is busy (its backlog is full)")
        detail = _last_line(stderr) or "no message"
        return AgentConnectionError(
            f"{name}: the relay to {path} ended (exit status {status}): {detail}"
        )

    async def _why_not(self, exc: asyncssh.ChannelOpenError) -> AgentError:
        """sshd says only "open failed"; ask the hypervisor what is wrong with the socket."""
        verdict = await self._diagnose()
        if verdict is None:
            return AgentConnectionError(
                f"{self._link.name}: sshd would not open {self.address} ({exc.reason})"
            )
        return self._verdict_error(verdict, exc.reason)

    async def _diagnose(self) -> str | None:
        """`VERDICT USER` from a shell test of the socket on the hypervisor, None if unknown."""
        try:
            result = await self._link.connection.run(diagnose_command(self.address), timeout=5.0)
        except AgentError:
            return None
        out = result.stdout if isinstance(result.stdout, bytes) else b""
        text = " ".join(out.decode("utf-8", "replace").split())
        return text or None

    def _verdict_error(self, verdict: str, reason: str) -> AgentConnectionError:
        name, path = self._link.name, self.address
        word, _, user = verdict.partition(" ")
        user = user or self._link.connection.username or "the ssh user"
        directory = os.path.dirname(path)
        messages = {
            "missing": f"{name}: no agent socket at {path}",
            "nodir": (
                f"{name}: no agent socket at {path} (no directory {directory}, "
                f"or {user} may not search a parent)"
            ),
            "notsocket": f"{name}: {path} is not a socket",
            "noperm": (
                f'{name}: permission denied on {path} for {user} (use via = "sudo", or let '
                f"{user} read and write the socket)"
            ),
            "dirperm": f"{name}: permission denied on {directory} for {user}",
            "usable": f"{name}: nothing listens on {path} (its VM is gone?)",
            # sshd answers every refusal with the same "open failed"; with the socket
            # present, usable and listened on, what is left is sshd's own policy (or a
            # full backlog: someone else holds the agent).
            "listening": (
                f"{name}: sshd will not forward to {path}, which exists, is usable by {user} "
                "and is listened on: AllowStreamLocalForwarding is off (or DisableForwarding, "
                'or restrict in authorized_keys), or its backlog is full; via = "exec" '
                "needs no forwarding"
            ),
        }
        return AgentConnectionError(messages.get(word, f"{name}: cannot open {path} ({reason})"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SshHypervisor:
    """A hypervisor reached over SSH: globs expanded there, one connection for all VMs."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        *,
        via: str = "socket",  # "socket" | "exec" | "sudo"
        max_reply: int = DEFAULT_MAX_REPLY,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 3.0,
        keepalive_count_max: int = 3,
        sudo_wrapper: str = DEFAULT_SUDO_WRAPPER,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if via not in VIAS:
            raise ValueError(f"{name}: via must be one of {', '.join(VIAS)}, not {via!r}")
        self._name = name
        self.target = target
        self.via = via
        self.max_reply = max_reply
        self.sudo_wrapper = sudo_wrapper
        self.connection = SshConnection(
            name,
            target,
            connect_timeout=connect_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
            max_sessions=max_sessions,
        )
        self._keeper: ThawKeeper | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> HypervisorState:
        return self.connection.state

    @property
    def error(self) -> str | None:
        return self.connection.error

    @property
    def keeper(self) -> ThawKeeper | None:
        """A thaw armed on the hypervisor over this connection (`transport/keeper.py`)."""
        if self._keeper is None:
            # Imported here: the keeper module builds on this one.
            from qgadash.transport.keeper import RemoteThawKeeper, ThawRoute

            route = (
                ThawRoute("sudo", self.sudo_wrapper) if self.via == "sudo" else ThawRoute("socat")
            )
            self._keeper = RemoteThawKeeper(self.connection, route)
        return self._keeper

    async def discover(self, patterns: list[str]) -> list[DiscoveredAgent]:
        """Sockets matching the globs on the hypervisor (one command there)."""
        if not patterns:
            return []
        result = await self.connection.run(sh_command(discovery_script(patterns)))
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        if result.exit_status not in (0, None):
            stderr = result.stderr if isinstance(result.stderr, bytes) else b""
            detail = _last_line(stderr.decode("utf-8", "replace"))
            raise AgentConnectionError(
                f"{self.name}: listing agent sockets failed: "
                f"{detail or f'exit status {result.exit_status}'}"
            )
        return [DiscoveredAgent(vm_name_for_socket(p), p) for p in parse_discovery_output(stdout)]

    def endpoint(self, address: str) -> SshEndpoint:
        return SshEndpoint(self, address)

    async def close(self) -> None:
        await self.connection.close()
