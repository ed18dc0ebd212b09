"""One VM's agent on a hypervisor, reached as a channel on the hypervisor's SSH connection.

- `via="socket"`: a direct-streamlocal channel to the agent socket (stock sshd allows
  it; MaxSessions does not count these);
- `via="exec"`: `socat - UNIX-CONNECT:PATH` in an exec channel (a session: counted by
  MaxSessions, so at most `max_sessions` at once);
- `via="sudo"`: the same through `sudo -n WRAPPER PATH`, a root-owned script that
  checks the path before it runs socat (docs/ssh.md has the script and sudoers rule);
- a `host:port` address: a direct-tcpip channel from the hypervisor.

When a channel will not open, `diagnosis.py` finds out why.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncssh

from qgadash.agent.client import AgentCaller, AgentClient, AgentTraits, NoReplyOutcome, Request
from qgadash.agent.errors import AgentConnectionError, AgentError, AgentTimeout
from qgadash.transport.address import parse_tcp_address
from qgadash.transport.exec_stream import ChannelStream, ProcessStream
from qgadash.transport.shell import socat_unix_address
from qgadash.transport.ssh.connection import SshConnection, describe
from qgadash.transport.ssh.diagnosis import exec_failure, why_not
from qgadash.transport.ssh.link import SshLink

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

    def __init__(self, link: SshLink, address: str) -> None:
        self._link = link
        self.address = address
        self.traits = AgentTraits()  # what the agent taught earlier channels
        self._tcp = parse_tcp_address(address)

    @property
    def label(self) -> str:
        return f"{self._link.name}:{self.address}"

    async def connect(self, timeout: float) -> AgentCaller:
        link = self._link
        disabled = link.agent_disabled(self.address)
        if disabled is not None:
            raise AgentConnectionError(disabled)
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
                raise await exec_failure(self._link, self.address, stream) from None
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
            raise await why_not(self._link, self.address, exc) from None
        except (OSError, asyncssh.Error) as exc:
            raise AgentConnectionError(
                self._link.connection.error or f"{self.label}: {describe(exc)}"
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
            raise AgentConnectionError(f"{self.label}: {describe(exc)}") from None
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
            raise AgentConnectionError(link.error or f"{self.label}: {describe(exc)}") from None
        except BaseException:
            sessions.release()  # cancelled mid-open: the slot must not leak
            raise
        return ProcessStream(process, sessions.release)
