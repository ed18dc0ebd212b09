"""What one simulated agent holds and the facts every command area reads: the guest's
clock and counters, its files (a shared tree with a copy-on-write overlay), the growing
log, and which commands are enabled now. The command areas (sibling modules) are mixins
over `AgentState`; only this class has slots, so they combine into one layout.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qgadash.sim.commands.faults import mark_invalid
from qgadash.sim.commands.schema import (
    FROZEN_ALLOWED,
    LINUX_UNSUPPORTED,
    Era,
    supported_commands,
)
from qgadash.sim.profiles import (
    Disk,
    Fault,
    GuestFile,
    GuestProfile,
    markup_profile,
    windows_unsupported_commands,
)
from qgadash.sim.wire import RequestStream

S_IFDIR = 0o040000
S_IFREG = 0o100000


# --- the guest's files ------------------------------------------------------------------


class Tree:
    """An index over a profile's (shared, immutable) file list."""

    __slots__ = ("children", "entries", "windows")

    def __init__(self, files: tuple[GuestFile, ...], windows: bool) -> None:
        self.windows = windows
        self.entries: dict[str, GuestFile] = {}
        self.children: dict[str, set[str]] = {}
        for entry in files:
            key = norm_path(entry.path, windows)
            self.entries[key] = entry
            parent, name = split_path(key, windows)
            if name:
                self.children.setdefault(parent, set()).add(
                    entry.path.rsplit("\\" if windows else "/", 1)[-1]
                )


_TREES: dict[int, tuple[tuple[GuestFile, ...], Tree]] = {}


def tree_for(profile: GuestProfile) -> Tree:
    cached = _TREES.get(id(profile.files))
    if cached is not None and cached[0] is profile.files:
        return cached[1]
    tree = Tree(profile.files, profile.windows)
    _TREES[id(profile.files)] = (profile.files, tree)
    return tree


def norm_path(path: str, windows: bool) -> str:
    if windows:
        path = path.replace("/", "\\")
        while "\\\\" in path[1:]:
            path = path[0] + path[1:].replace("\\\\", "\\")
        if len(path) == 2 and path[1] == ":":
            path += "\\"
        if len(path) > 3 and path.endswith("\\"):
            path = path[:-1]
        return path.lower()
    if not path.startswith("/"):
        path = "/" + path
    return posixpath.normpath(path).replace("//", "/")


def split_path(key: str, windows: bool) -> tuple[str, str]:
    if windows:
        if len(key) <= 3:
            return key, ""
        parent, _, name = key.rpartition("\\")
        if len(parent) == 2:
            parent += "\\"
        return parent, name
    if key == "/":
        return "/", ""
    parent, _, name = key.rpartition("/")
    return parent or "/", name


@dataclass(slots=True)
class Handle:
    path: str  # normalised key
    shown: str
    readable: bool
    writable: bool
    append: bool
    is_dir: bool
    pos: int = 0
    eof: bool = False


@dataclass(slots=True)
class Process:
    done_at: float
    exitcode: int | None
    signal: int | None
    out: bytes
    err: bytes
    capture: bool


@dataclass(slots=True)
class Overlay:
    """Files this VM wrote (copy on write over the shared tree)."""

    files: dict[str, bytearray] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)
    mtimes: dict[str, int] = field(default_factory=dict)


_LOG_MESSAGES = (
    "systemd[1]: Started session-{n}.scope - Session {n} of User ops.",
    "kernel: [{sec}.{usec:06d}] virtio_net virtio0 {nic}: link up",
    "sshd[{pid}]: Accepted publickey for ops from 192.0.2.10 port {port} ssh2",
    "CRON[{pid}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "qemu-ga: info: guest-ping called",
    "systemd[1]: Starting logrotate.service - Rotate log files...",
    "kernel: [{sec}.{usec:06d}] EXT4-fs (vda1): resizing filesystem",
    "chronyd[{pid}]: Selected source 192.0.2.123 (pool.example.net)",
    "systemd[1]: logrotate.service: Deactivated successfully.",
    "postfix/qmgr[{pid}]: 4F1A2B3C: removed",
)
_LOG_HISTORY = 40  # lines already in the log when the agent starts
_LOG_CAP = 8 << 20
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AgentState:
    """The state of one simulated agent.

    `clock` is monotonic seconds (drives exec completion, counters, the growing log);
    `wall` is the guest's idea of the epoch time in seconds.
    """

    __slots__ = (
        "_clock",
        "_down",
        "_drift_ns",
        "_era",
        "_exec",
        "_fault",
        "_frozen",
        "_frozen_at",
        "_handles",
        "_keys",
        "_log",
        "_log_lines",
        "_next_handle",
        "_next_pid",
        "_offline_cpus",
        "_overlay",
        "_phase",
        "_power_off",
        "_profile",
        "_resume_at",
        "_started_endless",
        "_stream",
        "_t0",
        "_tree",
        "_version",
        "_wall",
        "_wall0",
    )

    def __init__(
        self,
        profile: GuestProfile,
        fault: Fault = Fault.NONE,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if fault is Fault.MARKUP:
            profile = markup_profile(profile)
        elif fault is Fault.INVALID_UTF8:
            profile = mark_invalid(profile)
        self._profile = profile
        self._version = profile.agent_version_tuple()
        self._era = Era.of(self._version)
        self._fault = fault
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._wall0 = wall()
        self._stream = RequestStream()
        self._tree = tree_for(profile)
        digest = hashlib.blake2s(profile.hostname.encode(), digest_size=8).digest()
        self._phase = int.from_bytes(digest[:4], "big") / 2**32 * math.tau
        self._drift_ns = (int.from_bytes(digest[4:], "big") % 1_000_000_000) - 500_000_000
        self._frozen = fault is Fault.FROZEN
        self._frozen_at = self._t0 if self._frozen else 0.0
        self._handles: dict[int, Handle] | None = None
        self._next_handle = 1000
        self._exec: dict[int, Process] | None = None
        self._next_pid = 1000 + int.from_bytes(digest[:2], "big") % 3000
        self._overlay: Overlay | None = None
        self._keys: dict[str, list[str]] | None = None  # user -> keys (file there)
        self._offline_cpus: set[int] | None = None
        self._log: bytearray | None = None
        self._log_lines = 0
        self._resume_at = 0.0
        self._down = False
        self._power_off = False
        self._started_endless = False

    def _supported(self) -> tuple[str, ...]:
        return supported_commands(self._version, self._profile.windows)

    def _disabled_reason(self, command: str) -> str | None:
        """None when the command may run; else the text after "has been disabled"."""
        if self._frozen and command not in FROZEN_ALLOWED:
            return ": the agent is in frozen state"
        unsupported = windows_unsupported_commands() if self._profile.windows else LINUX_UNSUPPORTED
        if command in unsupported:
            return ""
        if command in self._profile.disabled_commands:
            return ": the command is not allowed" if self._era.disable_reason else ""
        return None

    # -- time-varying facts -------------------------------------------------------------

    def _elapsed(self) -> float:
        return self._clock() - self._t0

    def _guest_time_ns(self) -> int:
        return int(self._wall() * 1e9) + self._drift_ns

    def _counter(self, base: int, rate: float, t: float) -> int:
        # Integral of rate * (1 + 0.5 sin(w t + phase)): always growing, never flat.
        w = math.tau / 60.0
        wobble = 0.5 * rate * (math.cos(self._phase) - math.cos(w * t + self._phase)) / w
        return base + int(rate * t + wobble)

    def _loads(self) -> tuple[float, float, float]:
        t = self._elapsed()
        base = self._profile.load
        p = self._phase
        l1 = base * (1 + 0.6 * math.sin(t / 23 + p) + 0.25 * math.sin(t / 7.3 + 2 * p))
        l5 = base * (1 + 0.3 * math.sin(t / 97 + p))
        l15 = base * (1 + 0.1 * math.sin(t / 300 + p))
        return (round(max(0.0, l1), 2), round(max(0.0, l5), 2), round(max(0.0, l15), 2))

    def _loadavg_bytes(self) -> bytes:
        """/proc/loadavg as Linux writes it: the load averages guest-get-load would report,
        running/total tasks, the last pid."""
        l1, l5, l15 = self._loads()
        tasks = 90 + 10 * self._profile.vcpus
        return f"{l1:.2f} {l5:.2f} {l15:.2f} 1/{tasks} {4000 + tasks * 3}\n".encode()

    def _log_bytes(self) -> bytearray:
        if self._log is None:
            self._log = bytearray()
        target = _LOG_HISTORY + int(self._elapsed() / self._profile.log_interval)
        log = self._log
        start_wall = self._wall0 - _LOG_HISTORY * self._profile.log_interval
        host = self._profile.hostname
        nic = self._profile.interfaces[-1].name if self._profile.interfaces else "eth0"
        while self._log_lines < target and len(log) < _LOG_CAP:
            n = self._log_lines
            stamp = time.gmtime(start_wall + n * self._profile.log_interval)
            template = _LOG_MESSAGES[(n * 7 + int(self._phase * 10)) % len(_LOG_MESSAGES)]
            message = template.format(
                n=n + 1,
                sec=n * 2,
                usec=(n * 7919) % 1_000_000,
                nic=nic,
                pid=1000 + n * 13 % 30000,
                port=40000 + n % 20000,
            )
            line = (
                f"{_MONTHS[stamp.tm_mon - 1]} {stamp.tm_mday:2d} "
                f"{stamp.tm_hour:02d}:{stamp.tm_min:02d}:{stamp.tm_sec:02d} "
                f"{host} {message}\n"
            )
            log += line.encode("utf-8", "replace")
            self._log_lines += 1
        return log

    def _restart(self) -> None:
        """The agent process restarts: handles, processes and the parser are gone."""
        self._stream.reset()
        self._handles = None
        self._exec = None
        self._started_endless = False

    # -- files --------------------------------------------------------------------------

    def _dynamic_files(self) -> dict[str, Callable[[], bytes]]:
        p = self._profile
        files: dict[str, Callable[[], bytes]] = {
            norm_path(p.log_path, p.windows): lambda: bytes(self._log_bytes()),
        }
        if not p.windows:
            files["/etc/hostname"] = lambda: (p.hostname + "\n").encode()
            files["/etc/os-release"] = lambda: _os_release(p).encode()
            # What `qgadash status` reads from agents without guest-get-load (fleet/loadavg.py).
            files["/proc/loadavg"] = self._loadavg_bytes
        return files

    def _lookup(self, key: str) -> bytes | bool | None:
        """File content, None for a directory, False when nothing is there."""
        if self._overlay is not None and key in self._overlay.files:
            return bytes(self._overlay.files[key])
        dynamic = self._dynamic_files().get(key)
        if dynamic is not None:
            return dynamic()
        entry = self._tree.entries.get(key)
        if entry is None:
            return False
        return entry.content

    def _size_of(self, key: str) -> int:
        if self._overlay is not None and key in self._overlay.files:
            return len(self._overlay.files[key])
        found = self._lookup(key)
        return len(found) if isinstance(found, bytes) else 0

    def _listing(self, directory: str) -> list[tuple[int, int, int, str]]:
        """(mode, size, mtime, name) of each entry, as `stat -c '%f %s %Y %n'` sees them."""
        windows = self._profile.windows
        key = norm_path(directory, windows)
        names: dict[str, str] = {}
        for name in self._tree.children.get(key, ()):
            names[norm_path(f"{key}/{name}" if not windows else f"{key}\\{name}", windows)] = name
        extra = list(self._dynamic_files())
        if self._overlay is not None:
            extra += list(self._overlay.files)
        for path in extra:
            parent, name = split_path(path, windows)
            if parent == key and name:
                shown = self._overlay.shown.get(path) if self._overlay else None
                names[path] = (shown or path).rsplit("\\" if windows else "/", 1)[-1]
        rows = []
        boot = int(self._wall0)
        for path, name in names.items():
            entry = self._tree.entries.get(path)
            if entry is not None and entry.is_dir:
                rows.append((S_IFDIR | entry.mode, 4096, entry.mtime, name))
                continue
            size = self._size_of(path)
            if self._overlay is not None and path in self._overlay.mtimes:
                mtime = self._overlay.mtimes[path]
            elif entry is not None:
                mtime = entry.mtime
            else:
                log_key = norm_path(self._profile.log_path, windows)
                mtime = int(self._wall()) if path == log_key else boot
            mode = entry.mode if entry is not None else 0o644
            rows.append((S_IFREG | mode, size, mtime, name))
        rows.sort(key=lambda row: row[3].encode("utf-8", "surrogateescape"))
        return rows

    def _write_target(self, key: str, shown: str) -> bytearray:
        if self._overlay is None:
            self._overlay = Overlay()
        data = self._overlay.files.get(key)
        if data is None:
            found = self._lookup(key)
            data = bytearray(found if isinstance(found, bytes) else b"")
            self._overlay.files[key] = data
            self._overlay.shown[key] = shown
        return data

    def _touch(self, key: str) -> None:
        if self._overlay is not None:
            self._overlay.mtimes[key] = int(self._wall())

    def _disks(self) -> list[Disk]:
        seen: dict[str, Disk] = {}
        for fs in self._profile.filesystems:
            if fs.disk is not None:
                seen.setdefault(fs.disk.dev, fs.disk)
        return list(seen.values())


def _os_release(profile: GuestProfile) -> str:
    o = profile.os
    lines = [
        f'PRETTY_NAME="{o.pretty_name}"',
        f'NAME="{o.name}"',
        f'VERSION_ID="{o.version_id}"',
        f'VERSION="{o.version}"',
        f"ID={o.id}",
    ]
    if o.variant_id:
        lines.append(f"VARIANT_ID={o.variant_id}")
    return "\n".join(lines) + "\n"
