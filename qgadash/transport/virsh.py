"""Long-lived interactive `virsh` processes: commands in on stdin, output framed by markers.

Starting `virsh` per call costs ~17-20 ms locally and ~315 ms over `qemu+ssh://`, so
each libvirt hypervisor keeps a few long-lived interactive virsh processes (local, or
exec channels on the hypervisor's one SSH connection) and writes commands to their
stdin. docs/ssh.md explains the framing: readline echoes every command line, so each
command is followed by `echo Q'G'A-END-<token>-<n>`, whose output (no quotes, random
token) marks where the command's output ends. `libvirt_error` reads virsh's `error:`
lines as the agent errors the rest of qgadash knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import shlex
from typing import Protocol

import asyncssh

from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
)
from qgadash.transport.exec_stream import ProcessStream
from qgadash.transport.shell import sh_command
from qgadash.transport.ssh import SshConnection

DEFAULT_URI = "qemu:///system"
DEFAULT_MAX_SHELLS = 4
# How long virsh itself may take beyond the agent timeout it was given before it is
# considered stuck (and killed).
VIRSH_GRACE = 5.0
START_TIMEOUT = 20.0
AGENT_TIMEOUT_TTL = 60.0
VIRSH_ENV = {"TERM": "dumb", "LC_ALL": "C"}
_GLUED = re.compile(rb"^(.+?)virsh [#$>] echo Q'G'A-END-")
_READ_CHUNK = 256 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_AGENT_ERROR = re.compile(r"unable to execute QEMU agent command '([^']*)': (.*)", re.DOTALL)
DOMAIN_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def virsh_quote(text: str) -> str:
    """One virsh argument: virsh splits and quotes like sh (single quotes literal)."""
    if "\n" in text or "\r" in text or "\0" in text:
        raise ValueError(f"cannot pass {text!r} to virsh: line break or NUL")
    return shlex.quote(text)


def clean_vm_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name)[:63]
    return cleaned or "_"


class _Pipe(Protocol):
    async def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class _LocalPipe:
    """A virsh child process of ours; stderr is merged into stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def read(self, n: int) -> bytes:
        assert self.process.stdout is not None
        return await self.process.stdout.read(n)

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    async def drain(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.drain()

    def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def wait_closed(self) -> None:
        """Reap the process (its transport must not outlive the event loop)."""
        self.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.process.wait()


class VirshDied(Exception):
    """The virsh process ended; carries what it printed last."""


class VirshShell:
    """One interactive virsh: commands in on stdin, output framed by end markers."""

    def __init__(self, pipe: _Pipe, label: str, max_output: int) -> None:
        self._pipe = pipe
        self._label = label
        self._max_output = max_output
        self._token = secrets.token_hex(16)
        self._numbers = itertools.count()
        self._buffer = bytearray()
        self._pending_marker = b""
        self.alive = True

    @classmethod
    async def start_local(cls, uri: str, label: str, max_output: int) -> VirshShell:
        try:
            process = await asyncio.create_subprocess_exec(
                "virsh", "-q", "-c", uri,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **VIRSH_ENV},
                limit=_READ_CHUNK,
            )  # fmt: skip
        except FileNotFoundError:
            raise AgentConnectionError(
                f"{label}: virsh is not installed (Debian package libvirt-clients)"
            ) from None
        shell = cls(_LocalPipe(process), label, max_output)
        await shell._handshake()
        return shell

    @classmethod
    async def start_remote(
        cls, ssh: SshConnection, uri: str, label: str, max_output: int
    ) -> VirshShell:
        conn = await ssh.connection(START_TIMEOUT)
        sessions = await ssh.session_slot(START_TIMEOUT)
        env = " ".join(f"{k}={v}" for k, v in VIRSH_ENV.items())
        command = sh_command(f"{env} exec virsh -q -c {shlex.quote(uri)} 2>&1")
        try:
            process = await conn.create_process(command, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            sessions.release()
            raise AgentConnectionError(
                ssh.error or f"{label}: cannot start virsh on {ssh.host}: {exc}"
            ) from None
        shell = cls(ProcessStream(process, sessions.release), label, max_output)
        await shell._handshake()
        return shell

    async def _handshake(self) -> None:
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._send(b"")
                await self._until_marker()
        except VirshDied as exc:
            await self.wait_closed()
            raise AgentConnectionError(f"{self._label}: virsh could not start: {exc}") from None
        except TimeoutError:
            await self.wait_closed()
            raise AgentConnectionError(
                f"{self._label}: virsh did not start within {START_TIMEOUT:g} s"
            ) from None

    def _marker(self, number: int) -> tuple[bytes, bytes]:
        """The command that prints the marker, and the marker it prints."""
        text = f"A-END-{self._token}-{number}"
        return f"echo Q'G'{text}\n".encode(), f"QG{text}".encode()

    async def _send(self, command: bytes) -> bytes:
        number = next(self._numbers)
        marker_command, marker = self._marker(number)
        self._pending_marker = marker
        self._pipe.write(command + marker_command)
        await self._pipe.drain()
        return marker

    async def _until_marker(self) -> bytes:
        marker = self._pending_marker
        start = 0
        while True:
            index = self._buffer.find(marker, start)
            if index >= 0:
                segment = bytes(self._buffer[:index])
                del self._buffer[: index + len(marker)]
                return segment
            start = max(0, len(self._buffer) - len(marker))
            if len(self._buffer) > self._max_output:
                self.close()
                raise AgentProtocolError(
                    f"{self._label}: virsh printed over {self._max_output} bytes for one command"
                )
            try:
                data = await self._pipe.read(_READ_CHUNK)
            except (OSError, EOFError) as exc:
                data = b""
                self._buffer += f"\n{exc}".encode()
            if not data:
                self.alive = False
                text = self._buffer.decode("utf-8", "replace")
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                errors = [line for line in lines if line.startswith("error:")] or lines[-2:]
                raise VirshDied("; ".join(_strip_error(line) for line in errors) or "it exited")
            self._buffer += data

    async def run(self, command: str, timeout: float) -> str:
        """Run one virsh command line; its output (reply or `error:` lines), decoded."""
        if not self.alive:
            raise VirshDied("it exited")
        try:
            async with asyncio.timeout(timeout):
                await self._send(command.encode() + b"\n")
                segment = await self._until_marker()
        except BaseException:
            # Cut off mid-command (timeout, cancellation): the stream position is unknown.
            self.close()
            raise
        return command_output(segment).decode("utf-8", "replace")

    def close(self) -> None:
        self.alive = False
        self._pipe.close()

    async def wait_closed(self) -> None:
        self.close()
        await self._pipe.wait_closed()


def command_output(segment: bytes) -> bytes:
    """A command's output from the bytes between two markers.

    The segment is: prompt + echo of the command + "\\n" + OUTPUT + prompt + echo of the
    marker command + "\\n". readline never breaks an echoed line (TERM=dumb scrolls it
    sideways), so the first and last lines are the echoes. An output that does not end
    its last line (`domtime`'s `Time: N` under -q) shares the marker's line, before the
    prompt: that part is kept.
    """
    body = segment[:-1] if segment.endswith(b"\n") else segment
    head, _, last = body.rpartition(b"\n")
    _, _, output = head.partition(b"\n")
    glued = _GLUED.match(last)
    tail = glued.group(1) if glued else b""
    if tail:
        return output + b"\n" + tail if output else tail
    return output


def _strip_error(line: str) -> str:
    return line[len("error:") :].strip() if line.startswith("error:") else line


def libvirt_error(label: str, command: str, output: str) -> AgentError:
    """The agent error that a virsh error message stands for (docs/ssh.md has the table)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    message = "; ".join(_strip_error(line) for line in lines) or "virsh printed nothing"
    low = message.lower()
    if "guest agent is not connected" in low:
        return AgentConnectionError(f"{label}: the guest agent is not running ({message})")
    if "not available for now" in low or "guest agent is not responding" in low:
        return AgentTimeout(f"{label}: {message}")
    if "disappeared" in low:
        return AgentConnectionError(f"{label}: the guest agent went away ({message})")
    if "is not configured" in low:
        return AgentConnectionError(f"{label}: {message}")
    if "domain is not running" in low:
        return AgentConnectionError(f"{label}: {message}")
    if "failed to get domain" in low or "domain not found" in low:
        return AgentConnectionError(f"{label}: the domain is gone ({message})")
    match = _AGENT_ERROR.search(message)
    if match:
        desc = match.group(2).strip()
        disabled = "has been disabled" in desc or "has not been found" in desc
        return AgentCommandError("CommandNotFound" if disabled else "GenericError", desc, command)
    if "timed out" in low or "timeout" in low:
        return AgentTimeout(f"{label}: {message}")
    if any(
        text in low
        for text in ("failed to connect", "no valid connection", "disconnected", "end of file")
    ):
        return AgentConnectionError(f"{label}: libvirt connection lost ({message})")
    return AgentCommandError("GenericError", message, command)


class VirshPool:
    """Up to `max_shells` virsh processes for one hypervisor, started on demand."""

    def __init__(
        self,
        name: str,
        uri: str,
        ssh: SshConnection | None,
        max_shells: int,
        max_output: int,
    ) -> None:
        self.name = name
        self.uri = uri
        self.ssh = ssh
        self.max_shells = max_shells
        self.max_output = max_output
        self.error: str | None = None
        self.closed = False
        self._idle: list[VirshShell] = []
        self._count = 0
        self._changed = asyncio.Condition()

    async def run(self, command: str, timeout: float) -> str:
        """Run a command on an idle virsh (starting one if needed); its output."""
        shell = await self._acquire(timeout)
        try:
            output = await shell.run(command, timeout)
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: virsh did not finish `{command.split()[0]}` within {timeout:g} s"
            ) from None
        except VirshDied as exc:
            raise AgentConnectionError(f"{self.name}: virsh exited: {exc}") from None
        finally:
            await self._release(shell)
        self.error = None
        return output

    async def _acquire(self, timeout: float) -> VirshShell:
        if self.closed:
            raise AgentConnectionError(f"{self.name}: the libvirt link is closed")
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(
                    lambda: bool(self._idle) or self._count < self.max_shells
                )
                if self._idle:
                    return self._idle.pop()
                self._count += 1
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: all {self.max_shells} virsh processes busy for {timeout:g} s"
            ) from None
        try:
            if self.ssh is None:
                shell = await VirshShell.start_local(self.uri, self.name, self.max_output)
            else:
                shell = await VirshShell.start_remote(
                    self.ssh, self.uri, self.name, self.max_output
                )
        except BaseException as exc:
            if isinstance(exc, AgentError):
                self.error = str(exc)
            async with self._changed:
                self._count -= 1
                self._changed.notify()
            raise
        return shell

    async def _release(self, shell: VirshShell) -> None:
        async with self._changed:
            if shell.alive and not self.closed:
                self._idle.append(shell)
            else:
                self._count -= 1
            self._changed.notify()
        if not shell.alive or self.closed:
            await shell.wait_closed()

    async def close(self) -> None:
        self.closed = True
        async with self._changed:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._changed.notify_all()
        for shell in idle:
            await shell.wait_closed()
