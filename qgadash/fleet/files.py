"""Guest files: directory listings through guest-exec, reads and writes in chunks.

The agent has no directory listing; on Linux we run a small `sh` script through
guest-exec that prints `stat -c '%f %s %Y %n'` per entry, on Windows a PowerShell
one-liner printing the same shape. File handles are agent-global integers, valid across
connections, so each chunk is its own short request and polls interleave with a long
transfer instead of waiting behind it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentError, AgentProtocolError
from qgadash.fleet.model import AgentState

if TYPE_CHECKING:
    from qgadash.fleet.engine import FleetEngine

T = TypeVar("T")
Progress = Callable[[int, int | None], None]

READ_CHUNK = 1 << 20  # per guest-file-read; the agent allows up to 48 MiB
WRITE_CHUNK = 48 * 1024  # raw bytes per guest-file-write (64 KiB as base64)
MAX_LIST_ENTRIES = 5000
EXEC_POLL = 0.05

LIST_SCRIPT = (
    'cd -- "$1" || exit 1; n=0; for f in .* *; do case "$f" in .|..) continue;; esac; '
    '[ -e "$f" ] || [ -L "$f" ] || continue; n=$((n+1)); '
    f'[ $n -gt {MAX_LIST_ENTRIES} ] && {{ echo "... more" >&2; exit 3; }}; '
    "stat -c '%f %s %Y %n' -- \"$f\"; done"
)
WINDOWS_LIST_SCRIPT = (
    "Get-ChildItem -Force -LiteralPath $args[0] | Select-Object -First "
    f"{MAX_LIST_ENTRIES} | ForEach-Object {{ $m = if ($_.PSIsContainer) {{ '41ed' }} "
    "else { '81a4' }; $s = if ($_.PSIsContainer) { 0 } else { $_.Length }; "
    "'{0} {1} {2} {3}' -f $m, $s, ([DateTimeOffset]$_.LastWriteTimeUtc).ToUnixTimeSeconds(), "
    "$_.Name }"
)


class ListingUnavailable(Exception):
    """No listing for this guest; str() says why in one line."""


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    kind: str  # "dir" | "file" | "link" | "other"
    size: int | None
    mtime: float | None


@dataclass(frozen=True, slots=True)
class DirListing:
    vm_id: str
    path: str
    entries: tuple[DirEntry, ...]
    via: str = "guest-exec"
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class FileSlice:
    data: bytes
    offset: int
    eof: bool
    size: int | None


def parse_listing(output: bytes) -> list[DirEntry]:
    """Lines of `MODEHEX SIZE MTIME NAME`; lines that do not parse are skipped."""
    entries = []
    for raw in output.decode("utf-8", errors="replace").split("\n"):
        parts = raw.split(" ", 3)
        if len(parts) != 4:
            continue
        mode_hex, size, mtime, name = parts
        try:
            mode = int(mode_hex, 16)
            size_n = int(size)
            mtime_n = float(mtime)
        except ValueError:
            continue
        if stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISLNK(mode):
            kind = "link"
        else:
            kind = "other"
        entries.append(DirEntry(name, kind, size_n if size_n >= 0 else None, mtime_n))
    entries.sort(key=lambda e: (e.kind != "dir", e.name))
    return entries


async def run_exec(
    caller: AgentCaller,
    path: str,
    args: list[str],
    *,
    timeout: float,
    request_timeout: float,
    input_data: bytes | None = None,
) -> replies.ExecStatus:
    """guest-exec, then guest-exec-status until it exits or `timeout` passes."""
    arguments: dict[str, Any] = {"path": path, "arg": args, "capture-output": True}
    if input_data:
        arguments["input-data"] = base64.b64encode(input_data).decode()
    pid = replies.parse_exec(await caller.call("guest-exec", arguments, timeout=request_timeout))
    delay = EXEC_POLL
    async with asyncio.timeout(timeout):
        while True:
            status = replies.parse_exec_status(
                await caller.call("guest-exec-status", {"pid": pid}, timeout=request_timeout)
            )
            if status.exited:
                return status
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


class GuestFiles:
    def __init__(self, engine: FleetEngine) -> None:
        self._engine = engine

    async def _run(self, vm_id: str, work: Callable[[AgentCaller], Awaitable[T]]) -> T:
        return await self._engine.with_agent(vm_id, work)

    def can_list(self, vm_id: str) -> str | None:
        snap = self._engine.store.get(vm_id)
        if snap is None:
            return "no such VM"
        if snap.agent is not AgentState.OK:
            return f"the agent is {snap.agent.value}"
        facts = snap.facts
        if facts.info is None:
            return None
        for needed in ("guest-exec", "guest-exec-status"):
            if not facts.info.offers(needed):
                return f"this agent has no {needed}: open a file by path"
            if not facts.info.enabled(needed):
                frozen = snap.freeze is replies.FreezeState.FROZEN
                why = "the guest is frozen" if frozen else "disabled by the guest's policy"
                return f"{needed} is {why}: open a file by path"
        return None

    async def list_dir(self, vm_id: str, path: str) -> DirListing:
        reason = self.can_list(vm_id)
        if reason is not None:
            raise ListingUnavailable(reason)
        snap = self._engine.store.get(vm_id)
        windows = bool(snap and snap.facts.os and snap.facts.os.id == "mswindows")
        settings = self._engine.settings
        if windows:
            prog, args = "powershell.exe", ["-NoProfile", "-Command", WINDOWS_LIST_SCRIPT, path]
        else:
            prog, args = "/bin/sh", ["-c", LIST_SCRIPT, "qgadash-ls", path]

        async def work(caller: AgentCaller) -> replies.ExecStatus:
            return await run_exec(
                caller,
                prog,
                args,
                timeout=settings.action_timeout,
                request_timeout=settings.timeout,
            )

        status = await self._run(vm_id, work)
        if status.exitcode not in (0, 3):
            err = status.stderr.decode("utf-8", errors="replace").strip()
            raise ListingUnavailable(err.splitlines()[-1] if err else f"cannot list {path}")
        entries = parse_listing(status.stdout)
        return DirListing(vm_id, path, tuple(entries), truncated=status.exitcode == 3)

    async def _open(self, vm_id: str, path: str, mode: str) -> int:
        timeout = self._engine.settings.timeout

        async def work(caller: AgentCaller) -> int:
            value = await caller.call(
                "guest-file-open", {"path": path, "mode": mode}, timeout=timeout
            )
            return replies.parse_file_handle(value)

        return await self._run(vm_id, work)

    async def _close(self, vm_id: str, handle: int) -> None:
        timeout = self._engine.settings.timeout

        async def work(caller: AgentCaller) -> None:
            await caller.call("guest-file-close", {"handle": handle}, timeout=timeout)

        with contextlib.suppress(AgentError):
            await asyncio.shield(self._run(vm_id, work))

    async def _seek(self, vm_id: str, handle: int, offset: int, whence: str) -> int:
        timeout = self._engine.settings.timeout

        async def work(caller: AgentCaller) -> int:
            value = await caller.call(
                "guest-file-seek",
                {"handle": handle, "offset": offset, "whence": whence},
                timeout=timeout,
            )
            return replies.parse_file_seek(value)

        return await self._run(vm_id, work)

    async def _read(self, vm_id: str, handle: int, count: int) -> replies.FileChunk:
        timeout = self._engine.settings.action_timeout

        async def work(caller: AgentCaller) -> replies.FileChunk:
            value = await caller.call(
                "guest-file-read", {"handle": handle, "count": count}, timeout=timeout
            )
            return replies.parse_file_read(value, count)

        return await self._run(vm_id, work)

    async def read(
        self, vm_id: str, path: str, *, offset: int = 0, max_bytes: int = 1 << 20
    ) -> FileSlice:
        """Up to `max_bytes` from `offset`; `size` is the file's size when it can be told."""
        handle = await self._open(vm_id, path, "r")
        try:
            size: int | None
            try:
                size = await self._seek(vm_id, handle, 0, "end")
                await self._seek(vm_id, handle, offset, "set")
            except AgentError:
                size = None  # pipes and some special files cannot seek
            chunks: list[bytes] = []
            got = 0
            eof = False
            while got < max_bytes and not eof:
                chunk = await self._read(vm_id, handle, min(READ_CHUNK, max_bytes - got))
                chunks.append(chunk.data)
                got += len(chunk.data)
                eof = chunk.eof or not chunk.data
            return FileSlice(b"".join(chunks), offset, eof, size)
        finally:
            await self._close(vm_id, handle)

    async def tail(self, vm_id: str, path: str, *, max_bytes: int = 64 * 1024) -> FileSlice:
        handle = await self._open(vm_id, path, "r")
        try:
            size = await self._seek(vm_id, handle, 0, "end")
            start = max(0, size - max_bytes)
            await self._seek(vm_id, handle, start, "set")
            chunk = await self._read(vm_id, handle, min(max_bytes, size - start) or 1)
            return FileSlice(chunk.data, start, True, size)
        finally:
            await self._close(vm_id, handle)

    async def download(
        self, vm_id: str, path: str, local: Path, *, progress: Progress | None = None
    ) -> int:
        """Copy a guest file to `local` (written beside it, renamed when complete)."""
        handle = await self._open(vm_id, path, "r")
        partial = local.with_name(local.name + ".partial")
        done = 0
        try:
            total: int | None
            try:
                total = await self._seek(vm_id, handle, 0, "end")
                await self._seek(vm_id, handle, 0, "set")
            except AgentError:
                total = None
            with partial.open("wb") as out:
                while True:
                    chunk = await self._read(vm_id, handle, READ_CHUNK)
                    out.write(chunk.data)
                    done += len(chunk.data)
                    if progress:
                        progress(done, total)
                    if chunk.eof or not chunk.data:
                        break
            os.replace(partial, local)
            return done
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        finally:
            await self._close(vm_id, handle)

    async def upload(
        self, vm_id: str, local: Path, path: str, *, progress: Progress | None = None
    ) -> int:
        """Write a local file to the guest in chunks; the guest file is truncated first."""
        total = local.stat().st_size
        handle = await self._open(vm_id, path, "w")
        timeout = self._engine.settings.action_timeout
        done = 0
        try:
            with local.open("rb") as src:
                while True:
                    data = src.read(WRITE_CHUNK)
                    if not data:
                        break
                    encoded = base64.b64encode(data).decode()

                    async def work(caller: AgentCaller, encoded: str = encoded) -> int:
                        value = await caller.call(
                            "guest-file-write",
                            {"handle": handle, "buf-b64": encoded},
                            timeout=timeout,
                        )
                        return replies.parse_file_write(value)

                    written = await self._run(vm_id, work)
                    if written != len(data):
                        raise AgentProtocolError(f"the agent wrote {written} of {len(data)} bytes")
                    done += written
                    if progress:
                        progress(done, total)
            return done
        finally:
            await self._close(vm_id, handle)
