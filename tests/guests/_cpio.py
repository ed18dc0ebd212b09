"""A minimal writer for cpio "newc" archives, the format the kernel unpacks as initramfs.

Written here rather than shelling out to ``cpio`` so the archive is byte-for-byte
reproducible (fixed mtimes, sorted entries), needs no root for device nodes
(``/dev/console`` must exist before devtmpfs is mounted, or ``/init`` starts without a
console), and costs one less host dependency.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class _Entry:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


class CpioTree:
    """An in-memory tree of files, directories, symlinks and device nodes.

    Parent directories are created implicitly, so callers only name leaves.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @staticmethod
    def _norm(path: str) -> str:
        p = PurePosixPath("/", path)
        return str(p).lstrip("/")

    def _parents(self, name: str) -> None:
        parent = PurePosixPath(name).parent
        while str(parent) not in ("", "."):
            key = str(parent)
            existing = self._entries.get(key)
            if existing is None:
                self._entries[key] = _Entry(stat.S_IFDIR | 0o755)
            elif not stat.S_ISDIR(existing.mode):
                raise ValueError(f"{key} is not a directory")
            parent = parent.parent

    def _put(self, path: str, entry: _Entry) -> None:
        name = self._norm(path)
        if not name:
            raise ValueError("cannot replace the archive root")
        self._parents(name)
        self._entries[name] = entry

    def dir(self, path: str, perm: int = 0o755) -> None:
        self._put(path, _Entry(stat.S_IFDIR | perm))

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._put(path, _Entry(stat.S_IFREG | perm, data))

    def symlink(self, path: str, target: str) -> None:
        self._put(path, _Entry(stat.S_IFLNK | 0o777, target.encode()))

    def chardev(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._put(path, _Entry(stat.S_IFCHR | perm, rdev=(major, minor)))

    def __contains__(self, path: str) -> bool:
        return self._norm(path) in self._entries

    def write(self, out: BinaryIO) -> None:
        """Write the archive; directories sort before their contents."""
        ino = 1
        for name in sorted(self._entries):
            entry = self._entries[name]
            _write_entry(out, ino, name, entry)
            ino += 1
        _write_entry(out, ino, _TRAILER, _Entry(0))


def _pad(out: BinaryIO, length: int) -> None:
    out.write(b"\0" * (-length % 4))


def _write_entry(out: BinaryIO, ino: int, name: str, entry: _Entry) -> None:
    encoded = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime: fixed for reproducible archives
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(encoded),
        0,  # check
    )
    header = _MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header)
    out.write(encoded)
    _pad(out, len(header) + len(encoded))
    out.write(entry.data)
    _pad(out, len(entry.data))
