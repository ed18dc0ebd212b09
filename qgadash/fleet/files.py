"""Guest files: directory listings through guest-exec, reads and writes in chunks.

Listings are made and parsed by `fleet/listing.py`. File handles are agent-global
integers, valid across connections, so each chunk is its own short request and polls
interleave with a long transfer instead of waiting behind it.

What lands on the operator's disk is decided here, never by the guest: a download is
bounded by the size the guest reported and by `max_download_bytes`, is written to a
new temporary file (O_EXCL, O_NOFOLLOW: nothing planted there is followed) and renamed
into place only when complete, and never replaces an existing file unless asked to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from qgadash.agent import replies
from qgadash.agent.client import LARGE_REPLY, AgentCaller
from qgadash.agent.errors import AgentError, AgentProtocolError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Settings
from qgadash.fleet.listing import (
    TRUNCATED_EXIT,
    DirEntry,
    linux_list_command,
    parse_listing,
    windows_list_command,
)
from qgadash.fleet.model import AgentState
from qgadash.fleet.store import FleetStore

__all__ = [
    "DirEntry",
    "DirListing",
    "DownloadTooLarge",
    "FileSlice",
    "GuestFiles",
    "ListingUnavailable",
    "run_exec",
]

T = TypeVar("T")
Progress = Callable[[int, int | None], None]

READ_CHUNK = 1 << 20  # per guest-file-read; the agent allows up to 48 MiB
WRITE_CHUNK = 48 * 1024  # raw bytes per guest-file-write (64 KiB as base64)
EXEC_POLL = 0.05
# guest-file-seek's whence as the integers every agent takes: the names ("set", "end")
# came in qemu-ga 2.6, and older agents refuse them.
_WHENCE = {"set": 0, "cur": 1, "end": 2}


class ListingUnavailable(Exception):
    """No listing for this guest; str() says why in one line."""


class DownloadTooLarge(AgentProtocolError):
    """The guest sent more than the download may hold (max_download_bytes)."""


@dataclass(frozen=True, slots=True)
class DirListing:
    vm_id: str
    path: str
    entries: tuple[DirEntry, ...]
    via: str = "guest-exec"
    truncated: bool = False  # the guest had more entries than are shown
    skipped: int = 0  # records that did not parse (bad numbers, repeated names)
    more: int = 0  # records past the parser's caps


@dataclass(frozen=True, slots=True)
class FileSlice:
    data: bytes
    offset: int
    eof: bool
    size: int | None


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
            status = await parse_exec_status_off_loop(
                await caller.call("guest-exec-status", {"pid": pid}, timeout=request_timeout)
            )
            if status.exited:
                return status
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def parse_exec_status_off_loop(value: Any) -> replies.ExecStatus:
    """parse_exec_status, in a worker thread when the output is large: base64-decoding
    16 MiB of a guest's output takes ~100 ms, a stall of every other VM's polls."""
    if isinstance(value, dict) and sum(
        len(text) for key in ("out-data", "err-data") if isinstance(text := value.get(key), str)
    ) > LARGE_REPLY:
        return await asyncio.to_thread(replies.parse_exec_status, value)
    return replies.parse_exec_status(value)


class AgentAccess(Protocol):
    """What guest files need of the engine: its agents (serialised with the polls), its
    state and settings, its audit log. (A protocol, so files.py does not import the
    engine that owns it.)"""

    @property
    def store(self) -> FleetStore: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def audit(self) -> AuditLog | None: ...

    async def with_agent(self, vm_id: str, work: Callable[[AgentCaller], Awaitable[T]]) -> T: ...


class GuestFiles:
    def __init__(self, engine: AgentAccess) -> None:
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
        prog, args = windows_list_command(path) if windows else linux_list_command(path)

        async def work(caller: AgentCaller) -> replies.ExecStatus:
            return await run_exec(
                caller,
                prog,
                args,
                timeout=settings.action_timeout,
                request_timeout=settings.timeout,
            )

        status = await self._run(vm_id, work)
        if status.exitcode not in (0, TRUNCATED_EXIT):
            err = status.stderr.decode("utf-8", errors="replace").strip()
            raise ListingUnavailable(err.splitlines()[-1] if err else f"cannot list {path}")
        # Up to 16 MiB of guest output: parsed in a thread, the loop keeps polling.
        parsed = await asyncio.to_thread(parse_listing, status.stdout)
        return DirListing(
            vm_id,
            path,
            parsed.entries,
            truncated=status.exitcode == TRUNCATED_EXIT or parsed.more > 0,
            skipped=parsed.skipped,
            more=parsed.more,
        )

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
                {"handle": handle, "offset": offset, "whence": _WHENCE[whence]},
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
        self,
        vm_id: str,
        path: str,
        local: Path,
        *,
        progress: Progress | None = None,
        overwrite: bool = False,
    ) -> int:
        """Copy a guest file to `local`: into a new temporary file beside it, renamed
        into place when complete. An existing `local` is replaced only with `overwrite`
        (FileExistsError otherwise, also if it appears while the copy runs)."""
        started = time.perf_counter()
        args = {"path": path, "local": str(local)}
        try:
            if not overwrite and os.path.lexists(local):
                raise FileExistsError(errno.EEXIST, "exists (not replaced)", str(local))
            fd, partial = _new_partial(local)
            try:
                with os.fdopen(fd, "wb") as out:
                    done = await self.download_to(vm_id, path, out.write, progress=progress)
                    out.flush()
                    os.fsync(out.fileno())
                _move_into_place(partial, local, overwrite)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
        except (AgentError, OSError) as exc:
            self._audit("download", vm_id, args, False, str(exc), started)
            raise
        self._audit("download", vm_id, {**args, "bytes": done}, True, None, started)
        return done

    async def download_to(
        self,
        vm_id: str,
        path: str,
        write: Callable[[bytes], object],
        *,
        progress: Progress | None = None,
    ) -> int:
        """Read a guest file chunk by chunk into `write`; the bytes copied.

        Bounded twice: by the size the guest reported when the file was opened (a file
        that grows, or claims eof late, is copied up to that size) and, when no size can
        be told (pipes, devices), by `max_download_bytes` (DownloadTooLarge past it).
        """
        limit = self._engine.settings.max_download_bytes
        handle = await self._open(vm_id, path, "r")
        done = 0
        try:
            total: int | None
            try:
                total = await self._seek(vm_id, handle, 0, "end")
                await self._seek(vm_id, handle, 0, "set")
            except AgentError:
                total = None
            if total is not None and total > limit:
                raise DownloadTooLarge(f"{path} is {total} bytes; max_download_bytes is {limit}")
            bound = total if total is not None else limit
            while done < bound or total is None:
                want = min(READ_CHUNK, bound - done) if total is not None else READ_CHUNK
                chunk = await self._read(vm_id, handle, want)
                if total is None and done + len(chunk.data) > limit:
                    raise DownloadTooLarge(
                        f"{path} sent over max_download_bytes ({limit}) and no end"
                    )
                write(chunk.data)
                done += len(chunk.data)
                if progress:
                    progress(done, total)
                if chunk.eof or not chunk.data:
                    break
            return done
        finally:
            await self._close(vm_id, handle)

    def _audit(
        self, action: str, vm_id: str, args: object, ok: bool, error: str | None, started: float
    ) -> None:
        audit = self._engine.audit
        if audit is not None:
            audit.record(action, vm_id, args, ok, error, (time.perf_counter() - started) * 1000)

    async def upload(
        self, vm_id: str, local: Path, path: str, *, progress: Progress | None = None
    ) -> int:
        """Write a local file to the guest in chunks; the guest file is truncated first."""
        started = time.perf_counter()
        args = {"path": path, "local": str(local)}
        try:
            done = await self._upload(vm_id, local, path, progress)
        except (AgentError, OSError) as exc:
            self._audit("upload", vm_id, args, False, str(exc), started)
            raise
        self._audit("upload", vm_id, {**args, "bytes": done}, True, None, started)
        return done

    async def _upload(self, vm_id: str, local: Path, path: str, progress: Progress | None) -> int:
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


def _new_partial(local: Path) -> tuple[int, str]:
    """A new file beside `local` for the download: O_EXCL and O_NOFOLLOW, so a file or
    symlink planted under the name is never written through; mode 0600 until complete."""
    directory = local.parent
    for _ in range(16):
        name = os.path.join(directory, f".{local.name}.{secrets.token_hex(4)}.partial")
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except FileExistsError:
            continue
        return fd, name
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def _move_into_place(partial: str, local: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(partial, local)
        return
    try:
        os.link(partial, local)  # fails if `local` appeared meanwhile: never replaced
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists (not replaced)", str(local)) from None
    except OSError:
        # No hard links here (some network and FAT file systems): check, then rename.
        if os.path.lexists(local):
            raise FileExistsError(errno.EEXIST, "exists (not replaced)", str(local)) from None
        os.rename(partial, local)
        return
    os.unlink(partial)
