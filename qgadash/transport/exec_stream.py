"""Byte streams over SSH channels, shaped as `ByteStream` for the agent client.

Two kinds: a forwarded channel (direct-streamlocal or direct-tcpip: the agent socket
itself, seen through sshd) and a remote process (`socat - UNIX-CONNECT:PATH`, maybe
under `sudo -n`) whose stdin and stdout carry the agent's bytes and whose stderr and
exit status explain a failure. asyncssh reports a dropped connection with its own
exceptions (`asyncssh.Error`), which the agent client does not know; both streams turn
them into `ConnectionResetError` so a lost hypervisor reads as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncssh

# How much of a failed remote command's stderr is worth showing to a person.
_STDERR_KEEP = 2000


class ChannelStream:
    """A forwarded SSH channel (asyncssh's reader/writer pair, bytes mode)."""

    __slots__ = ("reader", "writer")

    def __init__(
        self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
    ) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except asyncssh.Error as exc:
            raise ConnectionResetError(exc.reason) from exc

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except asyncssh.Error as exc:
            raise ConnectionResetError(exc.reason) from exc

    def close(self) -> None:
        self.writer.close()

    @property
    def closing(self) -> bool:
        """The channel is closed or closing (the connection died, or the peer left)."""
        return self.writer.channel.is_closing()


class ProcessStream:
    """A remote process whose stdin/stdout relay the agent's bytes.

    `on_closed` runs once when the channel has closed, whatever closed it: it returns
    the session slot this channel held (sshd's MaxSessions counts exec channels).
    """

    __slots__ = ("_closed_task", "_on_closed", "process")

    def __init__(
        self,
        process: asyncssh.SSHClientProcess[bytes],
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.process = process
        self._on_closed = on_closed
        self._closed_task: asyncio.Task[None] | None = None
        if on_closed is not None:
            self._closed_task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        # However the channel ends (closed, failed, connection lost), it frees its slot.
        with contextlib.suppress(Exception):
            await self.process.wait_closed()
        if self._on_closed is not None:
            callback, self._on_closed = self._on_closed, None
            callback()

    async def read(self, n: int) -> bytes:
        try:
            return await self.process.stdout.read(n)
        except asyncssh.Error as exc:
            raise ConnectionResetError(exc.reason) from exc

    def write(self, data: bytes) -> None:
        self.process.stdin.write(data)

    async def drain(self) -> None:
        try:
            await self.process.stdin.drain()
        except asyncssh.Error as exc:
            raise ConnectionResetError(exc.reason) from exc

    def close(self) -> None:
        self.process.close()

    @property
    def closing(self) -> bool:
        return self.process.channel.is_closing()

    async def wait_closed(self) -> None:
        self.process.close()
        with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
            async with asyncio.timeout(5):
                await self.process.wait_closed()

    async def failure(self, wait: float = 1.0) -> tuple[int | None, str]:
        """The exit status and stderr of a process that ended (or was made to end)."""
        with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
            async with asyncio.timeout(wait):
                await self.process.wait_closed()
        if not self.process.channel.is_closing():
            self.process.close()
        stderr = b""
        with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
            async with asyncio.timeout(0.2):
                stderr = await self.process.stderr.read(_STDERR_KEEP)
        return self.process.exit_status, stderr.decode("utf-8", "replace").strip()
