"""Guest file contents made safe to show, and guest paths. No Textual here."""

from __future__ import annotations

import ntpath
import os
import posixpath
import time
from pathlib import Path

from qgadash.ui.plain import sanitize

__all__ = [
    "LineBuffer",
    "free_local_path",
    "hex_lines",
    "is_binary",
    "join_path",
    "local_name",
    "parent_path",
]

_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0C, 0x0D, 0x1B}


def is_binary(data: bytes) -> bool:
    """NUL bytes, or too much that is neither ASCII text nor valid UTF-8, in the first 8 KiB."""
    head = data[:8192]
    if not head:
        return False
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a multi-byte character cut at the end
            return False
    odd = sum(1 for b in head if b not in _TEXT_BYTES and b < 0x80)
    high = sum(1 for b in head if b >= 0x80)
    return (odd + high) / len(head) > 0.3


def hex_lines(data: bytes, offset: int = 0, limit: int = 4096) -> list[str]:
    """`00000000  7f 45 4c 46 …  |.ELF…|` lines for the first `limit` bytes."""
    out = []
    for i in range(0, min(len(data), limit), 16):
        chunk = data[i : i + 16]
        hexpart = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        out.append(f"{offset + i:08x}  {hexpart:<47}  |{text}|")
    return out


class LineBuffer:
    """Bytes in, complete display lines out; a partial last line waits for more."""

    def __init__(self, max_line: int = 2000) -> None:
        self._pending = b""
        self._max_line = max_line

    def feed(self, data: bytes) -> list[str]:
        data = self._pending + data
        parts = data.split(b"\n")
        self._pending = parts.pop()
        if len(self._pending) > self._max_line * 4:
            parts.append(self._pending)
            self._pending = b""
        return [self._show(p) for p in parts]

    def flush(self) -> list[str]:
        if not self._pending:
            return []
        rest, self._pending = self._pending, b""
        return [self._show(rest)]

    def _show(self, raw: bytes) -> str:
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace").expandtabs(8)
        return sanitize(line, self._max_line)


def join_path(base: str, name: str, *, windows: bool = False) -> str:
    if windows:
        return ntpath.normpath(ntpath.join(base, name))
    return posixpath.normpath(posixpath.join(base, name))


def parent_path(path: str, *, windows: bool = False) -> str:
    if windows:
        return ntpath.dirname(ntpath.normpath(path).rstrip("\\")) or path
    parent = posixpath.dirname(posixpath.normpath(path))
    return parent or "/"


def local_name(guest_path: str) -> str:
    """A safe local file name from a guest path: its last part, without separators or
    control characters, never empty, never `.` or `..`."""
    name = guest_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    name = sanitize(name, 120).replace("/", "_")
    if name in ("", ".", ".."):
        name = f"guest-file-{int(time.time())}"
    return name


def free_local_path(directory: Path, name: str) -> Path:
    """`directory/name`, or `name-1`, `name-2`… (before the suffix) if that exists: a
    download never offers to save over a file that is already there."""
    candidate = directory / name
    stem, dot, suffix = name.partition(".") if not name.startswith(".") else (name, "", "")
    n = 0
    while os.path.lexists(candidate):
        n += 1
        candidate = directory / f"{stem}-{n}{dot}{suffix}"
    return candidate
