"""One simulated qemu-ga: a sans-IO state machine.

`GuestAgent.receive(bytes)` returns what the agent does next, in order: bytes to send,
`Pause(seconds)`, `Stream(chunks)` for replies too large to build, `Close()` and
`PowerOff()`. The asyncio shell in `fleet.py` carries those out. Nothing here touches a
socket, so a fleet of 10,000 agents costs a few dicts each and every edge case is a
two-line test.

Replies follow qemu-ga 7.2: member names and order, error classes and texts, `%.17g`
floats, no reply to guest-shutdown and guest-suspend-*, 0xFF before the
guest-sync-delimited reply, the frozen-state allow list. The profile's agent version
picks the era, as a real agent of that version would answer (see `_SINCE` and `_Era`):
the commands it has and how guest-info lists them, whether a request id is refused
(before 2.12), taken silently (2.12) or echoed (3.0 on), the error texts of the time,
and the reply members each era had (NIC statistics from 2.11, disk use in
guest-get-fsinfo from 3.0, guest-fstrim's per-path results from 2.4).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import math
import posixpath
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from qgadash.sim import powershell
from qgadash.sim.profiles import (
    Disk,
    Fault,
    GuestFile,
    GuestProfile,
    markup_profile,
    windows_unsupported_commands,
)
from qgadash.sim.wire import JsonError, QFloat, RequestStream, dumps, wrap_floats

__all__ = [
    "Close",
    "GuestAgent",
    "Output",
    "Pause",
    "PowerOff",
    "Stream",
]

# --- what the shell is asked to do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait before carrying out the next output (the agent is busy or slow)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stream:
    """Send these chunks one by one, with back-pressure; stop if the client leaves."""

    chunks: Iterable[bytes]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client's connection."""


@dataclass(frozen=True, slots=True)
class PowerOff:
    """The VM is gone: close the connection and stop listening."""


Output = bytes | Pause | Stream | Close | PowerOff

# --- command table -----------------------------------------------------------------------

# qemu-ga 7.2 lists its commands in this order (newest registration first).
_COMMANDS_72 = (
    "guest-get-cpustats",
    "guest-get-diskstats",
    "guest-ssh-remove-authorized-keys",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-get-authorized-keys",
    "guest-get-devices",
    "guest-get-osinfo",
    "guest-get-timezone",
    "guest-get-users",
    "guest-get-host-name",
    "guest-exec",
    "guest-exec-status",
    "guest-get-memory-block-info",
    "guest-set-memory-blocks",
    "guest-get-memory-blocks",
    "guest-set-user-password",
    "guest-get-fsinfo",
    "guest-get-disks",
    "guest-set-vcpus",
    "guest-get-vcpus",
    "guest-network-get-interfaces",
    "guest-suspend-hybrid",
    "guest-suspend-ram",
    "guest-suspend-disk",
    "guest-fstrim",
    "guest-fsfreeze-thaw",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-status",
    "guest-file-flush",
    "guest-file-seek",
    "guest-file-write",
    "guest-file-read",
    "guest-file-close",
    "guest-file-open",
    "guest-shutdown",
    "guest-info",
    "guest-set-time",
    "guest-get-time",
    "guest-ping",
    "guest-sync",
    "guest-sync-delimited",
)
_COMMANDS_NEWER = ("guest-network-get-route", "guest-get-load")  # listed before 7.2's
# The `Since:` tags of qga/qapi-schema.json (qapi-schema-guest.json in QEMU 1.x): the
# first qemu-ga release with each command; a simulated agent of an older version has no
# such command. (Kept apart from qgadash.agent.commands on purpose: the simulator states
# the schema's history itself, so the product's table is tested against it, not with it.)
_SINCE: dict[str, tuple[int, int]] = {
    "guest-sync-delimited": (1, 1),
    "guest-suspend-disk": (1, 1),
    "guest-suspend-ram": (1, 1),
    "guest-suspend-hybrid": (1, 1),
    "guest-network-get-interfaces": (1, 1),
    "guest-fstrim": (1, 2),
    "guest-get-time": (1, 5),
    "guest-set-time": (1, 5),
    "guest-get-vcpus": (1, 5),
    "guest-set-vcpus": (1, 5),
    "guest-fsfreeze-freeze-list": (2, 2),
    "guest-get-fsinfo": (2, 2),
    "guest-get-memory-blocks": (2, 3),
    "guest-set-memory-blocks": (2, 3),
    "guest-get-memory-block-info": (2, 3),
    "guest-set-user-password": (2, 3),
    "guest-exec": (2, 5),
    "guest-exec-status": (2, 5),
    "guest-get-host-name": (2, 10),
    "guest-get-users": (2, 10),
    "guest-get-timezone": (2, 10),
    "guest-get-osinfo": (2, 10),
    "guest-get-disks": (5, 2),
    "guest-get-devices": (5, 2),
    "guest-ssh-get-authorized-keys": (5, 2),
    "guest-ssh-add-authorized-keys": (5, 2),
    "guest-ssh-remove-authorized-keys": (5, 2),
    "guest-get-diskstats": (7, 1),
    "guest-get-cpustats": (7, 1),
    "guest-network-get-route": (9, 1),  # Linux only
    "guest-get-load": (10, 0),  # Linux only (getloadavg)
}
_SUPPORTED: dict[tuple[tuple[int, ...], bool], tuple[str, ...]] = {}


def _supported_commands(version: tuple[int, ...], windows: bool) -> tuple[str, ...]:
    key = (version, windows)
    cached = _SUPPORTED.get(key)
    if cached is None:
        if windows:  # the Windows agents simulated are 7.x and later builds
            cached = _COMMANDS_72
        else:
            cached = tuple(
                c for c in _COMMANDS_NEWER + _COMMANDS_72 if version >= _SINCE.get(c, (0, 15))
            )
        _SUPPORTED[key] = cached
    return cached


@dataclass(frozen=True, slots=True)
class _Era:
    """How a qemu-ga of one version words things, from QEMU's sources of the time
    (qapi/qmp-dispatch.c, qga/main.c, qerror.h, the schema)."""

    ids: str  # "refused" (< 2.12), "silent" (2.12: taken, not echoed), "echoed" (3.0+)
    old_classes: bool  # < 1.2: QError classes (QMPExtraInputObjectMember, CommandDisabled...)
    old_texts: bool  # < 3.0: "Invalid JSON syntax", "... disabled for this instance"
    lists_commands: bool  # >= 1.1: guest-info has supported_commands
    success_response: bool  # >= 1.7: ... each with success-response
    nic_statistics: bool  # >= 2.11
    fs_usage: bool  # >= 3.0: used-bytes, total-bytes in guest-get-fsinfo
    disk_serial: bool  # >= 3.1
    disk_dev: bool  # >= 5.2
    fstrim_paths: bool  # >= 2.4
    whence_names: bool  # >= 2.6: guest-file-seek takes "set"/"cur"/"end"
    capture_modes: bool  # >= 8.0: guest-exec capture-output takes a mode name
    disable_reason: bool  # >= 8.1: ": the command is not allowed" after a -b refusal

    @classmethod
    def of(cls, v: tuple[int, ...]) -> _Era:
        return cls(
            ids="refused" if v < (2, 12) else "silent" if v < (3, 0) else "echoed",
            old_classes=v < (1, 2),
            old_texts=v < (3, 0),
            lists_commands=v >= (1, 1),
            success_response=v >= (1, 7),
            nic_statistics=v >= (2, 11),
            fs_usage=v >= (3, 0),
            disk_serial=v >= (3, 1),
            disk_dev=v >= (5, 2),
            fstrim_paths=v >= (2, 4),
            whence_names=v >= (2, 6),
            capture_modes=v >= (8, 0),
            disable_reason=v >= (8, 1),
        )


_NO_SUCCESS_RESPONSE = frozenset(
    {"guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid"}
)
_FROZEN_ALLOWED = frozenset(
    {
        "guest-ping",
        "guest-info",
        "guest-sync",
        "guest-sync-delimited",
        "guest-fsfreeze-status",
        "guest-fsfreeze-thaw",
    }
)
_LINUX_UNSUPPORTED = frozenset({"guest-get-devices"})
# SLOW: every reply this late. A default poll pipelines up to 11 requests, so a poll
# takes 1-2.5 s: far slower than a healthy agent, still inside the 3 s timeout (an agent
# that is slow but working, which the dashboard shows by its round-trip time).
SLOW_REPLY_DELAY = 0.2
_SYNC_COMMANDS = frozenset({"guest-sync", "guest-sync-delimited", "guest-ping"})

# Argument schemas: (name, type, required), in the order QEMU's visitor checks them.
_Schema = tuple[tuple[str, str, bool], ...]
_SCHEMAS: dict[str, _Schema] = {
    "guest-sync": (("id", "int", True),),
    "guest-sync-delimited": (("id", "int", True),),
    "guest-set-time": (("time", "int", False),),
    "guest-shutdown": (("mode", "str", False),),
    "guest-file-open": (("path", "str", True), ("mode", "str", False)),
    "guest-file-close": (("handle", "int", True),),
    "guest-file-read": (("handle", "int", True), ("count", "int", False)),
    "guest-file-write": (
        ("handle", "int", True),
        ("buf-b64", "str", True),
        ("count", "int", False),
    ),
    "guest-file-seek": (
        ("handle", "int", True),
        ("offset", "int", True),
        ("whence", "whence", True),
    ),
    "guest-file-flush": (("handle", "int", True),),
    "guest-fsfreeze-freeze-list": (("mountpoints", "[str]", False),),
    "guest-fstrim": (("minimum", "int", False),),
    "guest-set-vcpus": (("vcpus", "[object]", True),),
    "guest-set-user-password": (
        ("username", "str", True),
        ("password", "str", True),
        ("crypted", "bool", True),
    ),
    "guest-set-memory-blocks": (("mem-blks", "[object]", True),),
    "guest-exec-status": (("pid", "int", True),),
    "guest-exec": (
        ("path", "str", True),
        ("arg", "[str]", False),
        ("env", "[str]", False),
        ("input-data", "str", False),
        ("capture-output", "capture", False),
    ),
    "guest-ssh-get-authorized-keys": (("username", "str", True),),
    "guest-ssh-add-authorized-keys": (
        ("username", "str", True),
        ("keys", "[str]", True),
        ("reset", "bool", False),
    ),
    "guest-ssh-remove-authorized-keys": (("username", "str", True), ("keys", "[str]", True)),
}
_TYPE_NAMES = {
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "number": "number",
    "whence": "GuestFileWhence",
    "capture": "GuestExecCaptureOutput",
}
_INT64 = (-(1 << 63), 1 << 63)
_FILE_READ_MAX = 48 << 20
_FILE_READ_DEFAULT = 4096
_EXEC_OUTPUT_MAX = 16 << 20
_OPEN_MODES = {
    # mode: (readable, writable, create, truncate, append)
    "r": (True, False, False, False, False),
    "rb": (True, False, False, False, False),
    "w": (False, True, True, True, False),
    "wb": (False, True, True, True, False),
    "a": (False, True, True, False, True),
    "ab": (False, True, True, False, True),
    "r+": (True, True, False, False, False),
    "rb+": (True, True, False, False, False),
    "r+b": (True, True, False, False, False),
    "w+": (True, True, True, True, False),
    "wb+": (True, True, True, True, False),
    "w+b": (True, True, True, True, False),
    "a+": (True, True, True, False, True),
    "ab+": (True, True, True, False, True),
    "a+b": (True, True, True, False, True),
}
_S_IFDIR = 0o040000
_S_IFREG = 0o100000


class CommandError(Exception):
    """A command failed: the agent answers `{"error": {"class": ..., "desc": ...}}`."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


# --- the guest's files ------------------------------------------------------------------


class _Tree:
    """An index over a profile's (shared, immutable) file list."""

    __slots__ = ("children", "entries", "windows")

    def __init__(self, files: tuple[GuestFile, ...], windows: bool) -> None:
        self.windows = windows
        self.entries: dict[str, GuestFile] = {}
        self.children: dict[str, set[str]] = {}
        for entry in files:
            key = _norm(entry.path, windows)
            self.entries[key] = entry
            parent, name = _split(key, windows)
            if name:
                self.children.setdefault(parent, set()).add(
                    entry.path.rsplit("\\" if windows else "/", 1)[-1]
                )


_TREES: dict[int, tuple[tuple[GuestFile, ...], _Tree]] = {}


def _tree_for(profile: GuestProfile) -> _Tree:
    cached = _TREES.get(id(profile.files))
    if cached is not None and cached[0] is profile.files:
        return cached[1]
    tree = _Tree(profile.files, profile.windows)
    _TREES[id(profile.files)] = (profile.files, tree)
    return tree


def _norm(path: str, windows: bool) -> str:
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


def _split(key: str, windows: bool) -> tuple[str, str]:
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
class _Handle:
    path: str  # normalised key
    shown: str
    readable: bool
    writable: bool
    append: bool
    is_dir: bool
    pos: int = 0
    eof: bool = False


@dataclass(slots=True)
class _Process:
    done_at: float
    exitcode: int | None
    signal: int | None
    out: bytes
    err: bytes
    capture: bool


@dataclass(slots=True)
class _Overlay:
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

# --- faults that change the bytes ---------------------------------------------------------

_GARBAGE = (
    b"<html><body><h1>502 Bad Gateway</h1></body></html>\r\n",
    b"\x00\x01\x02\x03\x04\x05binary\x80\x81\n",
    b"ERROR: agent crashed\n",
    b"}{][:,\n",
    b"return 42\n",
)
_INVALID_MARK = "\ue001"
_INVALID_MARK_JSON = b"\\uE001"
_INVALID_BYTES = b"\xff\xfe\xc0\xaf\xed\xa0\x80\x80bad"
_FF_FLOOD = b"\xff" * 65536
_DEEP = 100_000
_OVERSIZE_BYTES = 17 << 20
_HUGE_BYTES = 100_000_000
_CHUNK = 1 << 20


def _oversize_reply(rid: str) -> Iterator[bytes]:
    yield b'{"return": {"host-name": "'
    chunk = b"x" * _CHUNK
    for _ in range(_OVERSIZE_BYTES // _CHUNK):
        yield chunk
    yield f'"}}{rid}}}\n'.encode()


def _huge_reply(rid: str) -> Iterator[bytes]:
    entry = b'{"name": "eth0", "hardware-address": "52:54:00:12:34:56"}, '
    per_chunk = _CHUNK // len(entry)
    chunk = entry * per_chunk
    yield b'{"return": ['
    sent = 0
    while sent < _HUGE_BYTES:
        yield chunk
        sent += len(chunk)
    yield f'{{"name": "last"}}]{rid}}}\n'.encode()


def _endless() -> Iterator[bytes]:
    yield b'{"return": "'
    chunk = b"A" * 65536
    while True:
        yield chunk


def _deep_reply(rid: str) -> bytes:
    return b'{"return": ' + b"[" * _DEEP + b"]" * _DEEP + f"{rid}}}\n".encode()


# --- the agent ------------------------------------------------------------------------------


class GuestAgent:
    """The state of one simulated agent, fed with request bytes.

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
            profile = _mark_invalid(profile)
        self._profile = profile
        self._version = profile.agent_version_tuple()
        self._era = _Era.of(self._version)
        self._fault = fault
        self._clock = clock
        self._wall = wall
        self._t0 = clock()
        self._wall0 = wall()
        self._stream = RequestStream()
        self._tree = _tree_for(profile)
        digest = hashlib.blake2s(profile.hostname.encode(), digest_size=8).digest()
        self._phase = int.from_bytes(digest[:4], "big") / 2**32 * math.tau
        self._drift_ns = (int.from_bytes(digest[4:], "big") % 1_000_000_000) - 500_000_000
        self._frozen = fault is Fault.FROZEN
        self._frozen_at = self._t0 if self._frozen else 0.0
        self._handles: dict[int, _Handle] | None = None
        self._next_handle = 1000
        self._exec: dict[int, _Process] | None = None
        self._next_pid = 1000 + int.from_bytes(digest[:2], "big") % 3000
        self._overlay: _Overlay | None = None
        self._keys: dict[str, list[str]] | None = None
        self._log: bytearray | None = None
        self._log_lines = 0
        self._resume_at = 0.0
        self._down = False
        self._power_off = False
        self._started_endless = False

    # -- public --------------------------------------------------------------------------

    @property
    def profile(self) -> GuestProfile:
        return self._profile

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        """Tests turn a fault on or off while the agent runs (an agent that recovers)."""
        self._fault = fault

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def powered_off(self) -> bool:
        return self._down

    def power_on(self) -> None:
        """Boot again after a shutdown: a fresh agent (the frozen state is gone)."""
        self._restart()
        self._frozen = False  # a boot starts with nothing frozen (an agent restart keeps it)
        self._down = False
        self._resume_at = 0.0

    def connect(self) -> list[Output]:
        """A client connected."""
        if self._fault is Fault.ACCEPT_CLOSE:
            return [Close()]
        self._started_endless = False  # each client gets its own endless reply
        return []

    def receive(self, data: bytes) -> list[Output]:
        """Bytes from the client; returns what to do, in order."""
        if self._down or self._fault is Fault.SILENT:
            return []
        if self._fault is Fault.ENDLESS:
            if self._started_endless:
                return []
            if not self._stream.feed(data):
                return []
            self._started_endless = True
            return [Stream(_endless())]
        out: list[Output] = []
        now = self._clock()
        if self._resume_at > now:
            out.append(Pause(self._resume_at - now))
        for request in self._stream.feed(data):
            self._handle(request, out)
            if self._down:
                break
        return out

    def handle(self, request: object) -> list[Output]:
        """Run one already-parsed request (for tests and tools)."""
        out: list[Output] = []
        self._handle(request, out)
        return out

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, request: object, out: list[Output]) -> None:
        era = self._era
        if isinstance(request, JsonError):
            if era.old_texts:  # before 3.0 a stray byte was just "Invalid JSON syntax"
                cls = "JSONParsing" if era.old_classes else "GenericError"
                self._emit(None, _error_text(cls, "Invalid JSON syntax", None), out)
            else:
                self._emit(None, _error_text("GenericError", request.desc, None), out)
            return
        command: str | None = None
        rid: object = None
        delimited = False
        try:
            if not isinstance(request, dict):
                raise CommandError("QMP input must be a JSON object")
            if era.ids == "echoed":
                rid = request.get("id")
            command = self._check_request(request)
            args = request.get("arguments", {})
            ret = self._run(command, args)
        except CommandError as exc:
            text = _error_text(exc.error_class, exc.desc, rid)
        else:
            if ret is None:  # success-response: false
                if self._power_off:
                    out.append(Pause(2.0))  # QEMU exits ~2 s after the guest powers off
                    out.append(PowerOff())
                    self._power_off = False
                return
            if command == "guest-sync-delimited":
                delimited = True
            text = _return_text(ret, rid, self._fault is Fault.WRONG_IDS)
        self._emit(command, text, out, delimited=delimited, rid=rid)

    def _check_request(self, request: dict[str, object]) -> str:
        command: str | None = None
        for key, value in request.items():
            if key == "execute":
                if not isinstance(value, str):
                    raise CommandError("QMP input member 'execute' must be a string")
                command = value
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise CommandError("QMP input member 'arguments' must be an object")
            elif key == "id" and self._era.ids == "refused":
                # qmp_dispatch_check_obj() before 2.12 took only execute and arguments
                raise CommandError(
                    "QMP input object member 'id' is unexpected",
                    "QMPExtraInputObjectMember" if self._era.old_classes else "GenericError",
                )
            elif key != "id":
                raise CommandError(f"QMP input member '{key}' is unexpected")
        if command is None:
            raise CommandError("QMP input lacks member 'execute'")
        return command

    def _run(self, command: str, args: dict[str, object]) -> str | None:
        handler = _HANDLERS.get(command)
        if handler is None or command not in self._supported():
            raise CommandError(f"The command {command} has not been found", "CommandNotFound")
        reason = self._disabled_reason(command)
        if reason is not None:
            if self._era.old_texts:
                raise CommandError(
                    f"The command {command} has been disabled for this instance",
                    "CommandDisabled" if self._era.old_classes else "GenericError",
                )
            raise CommandError(f"Command {command} has been disabled{reason}", "CommandNotFound")
        params = _check_args(_SCHEMAS.get(command, ()), args, self._era)
        value = handler(self, params)
        if value is _NO_REPLY:
            return None
        if command == "guest-info":
            assert isinstance(value, str)
            return value  # already JSON text (cached)
        if self._fault is Fault.OUT_OF_RANGE:
            value = _out_of_range(command, value)
        elif self._fault is Fault.WRONG_IDS and command in ("guest-sync", "guest-sync-delimited"):
            assert isinstance(value, int)
            value = value + 1
        return dumps(value)

    def _supported(self) -> tuple[str, ...]:
        return _supported_commands(self._version, self._profile.windows)

    def _disabled_reason(self, command: str) -> str | None:
        """None when the command may run; else the text after "has been disabled"."""
        if self._frozen and command not in _FROZEN_ALLOWED:
            return ": the agent is in frozen state"
        unsupported = (
            windows_unsupported_commands() if self._profile.windows else _LINUX_UNSUPPORTED
        )
        if command in unsupported:
            return ""
        if command in self._profile.disabled_commands:
            return ": the command is not allowed" if self._era.disable_reason else ""
        return None

    def _emit(
        self,
        command: str | None,
        text: str,
        out: list[Output],
        *,
        delimited: bool = False,
        rid: object = None,
    ) -> None:
        fault = self._fault
        if fault is Fault.SYNC_ONLY and not (command == "guest-sync-delimited" and delimited):
            return
        data = text.encode()
        if delimited:
            data = b"\xff" + data
        data += b"\n"
        if fault is Fault.NONE or fault is Fault.FROZEN or fault is Fault.MARKUP:
            out.append(data)
            return
        plain_sync = command is None or command in _SYNC_COMMANDS  # None: a parse error
        rid_text = "" if rid is None else f', "id": {dumps(wrap_floats(rid))}'
        if fault is Fault.SLOW:
            out.append(Pause(SLOW_REPLY_DELAY))
        elif fault is Fault.LATE_REPLY:
            out.append(Pause(4.0))
        elif fault is Fault.GARBAGE:
            digest = hashlib.blake2s(data, digest_size=1).digest()[0]
            data = _GARBAGE[digest % len(_GARBAGE)]
        elif fault is Fault.DISCONNECT and not plain_sync:
            out.append(data[: max(1, len(data) // 2)])
            out.append(Close())
            return
        elif fault is Fault.OVERSIZE and not plain_sync:
            out.append(Stream(_oversize_reply(rid_text)))
            return
        elif fault is Fault.HUGE_REPLY and not plain_sync:
            out.append(Stream(_huge_reply(rid_text)))
            return
        elif fault is Fault.DEEP_NESTING and not plain_sync:
            data = _deep_reply(rid_text)
        elif fault is Fault.REPEATED_IDS:
            data = data + data
        elif fault is Fault.FF_FLOOD:
            data = _FF_FLOOD + data
        elif fault is Fault.INVALID_UTF8:
            data = data.replace(_INVALID_MARK_JSON, _INVALID_BYTES)
        out.append(data)

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
            _norm(p.log_path, p.windows): lambda: bytes(self._log_bytes()),
        }
        if not p.windows:
            files["/etc/hostname"] = lambda: (p.hostname + "\n").encode()
            files["/etc/os-release"] = lambda: _os_release(p).encode()
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
        key = _norm(directory, windows)
        names: dict[str, str] = {}
        for name in self._tree.children.get(key, ()):
            names[_norm(f"{key}/{name}" if not windows else f"{key}\\{name}", windows)] = name
        extra = list(self._dynamic_files())
        if self._overlay is not None:
            extra += list(self._overlay.files)
        for path in extra:
            parent, name = _split(path, windows)
            if parent == key and name:
                shown = self._overlay.shown.get(path) if self._overlay else None
                names[path] = (shown or path).rsplit("\\" if windows else "/", 1)[-1]
        rows = []
        boot = int(self._wall0)
        for path, name in names.items():
            entry = self._tree.entries.get(path)
            if entry is not None and entry.is_dir:
                rows.append((_S_IFDIR | entry.mode, 4096, entry.mtime, name))
                continue
            size = self._size_of(path)
            if self._overlay is not None and path in self._overlay.mtimes:
                mtime = self._overlay.mtimes[path]
            elif entry is not None:
                mtime = entry.mtime
            else:
                mtime = (
                    int(self._wall()) if path == _norm(self._profile.log_path, windows) else boot
                )
            mode = entry.mode if entry is not None else 0o644
            rows.append((_S_IFREG | mode, size, mtime, name))
        rows.sort(key=lambda row: row[3].encode("utf-8", "surrogateescape"))
        return rows

    def _write_target(self, key: str, shown: str) -> bytearray:
        if self._overlay is None:
            self._overlay = _Overlay()
        data = self._overlay.files.get(key)
        if data is None:
            found = self._lookup(key)
            data = bytearray(found if isinstance(found, bytes) else b"")
            self._overlay.files[key] = data
            self._overlay.shown[key] = shown
        return data

    # -- commands ---------------------------------------------------------------------------

    def _cmd_sync(self, args: dict[str, object]) -> object:
        return args["id"]

    def _cmd_ping(self, args: dict[str, object]) -> object:
        return {}

    def _cmd_info(self, args: dict[str, object]) -> object:
        key = (
            self._profile.agent_version,
            self._profile.windows,
            self._profile.disabled_commands,
            self._frozen,
        )
        cached = _INFO_CACHE.get(key)
        if cached is None:
            era = self._era
            commands: list[dict[str, object]] = []
            for name in self._supported():
                entry: dict[str, object] = {
                    "enabled": self._disabled_reason(name) is None,
                    "name": name,
                }
                if era.success_response:
                    entry["success-response"] = name not in _NO_SUCCESS_RESPONSE
                commands.append(entry)
            info: dict[str, object] = {"version": self._profile.agent_version}
            if era.lists_commands:  # qemu-ga 1.0 said only its version
                info["supported_commands"] = commands
            cached = dumps(info)
            if len(_INFO_CACHE) < 256:
                _INFO_CACHE[key] = cached
        if self._fault is Fault.OUT_OF_RANGE:
            return dumps({"version": 7, "supported_commands": {"guest-ping": "yes"}})
        return cached

    def _cmd_get_time(self, args: dict[str, object]) -> object:
        return self._guest_time_ns()

    def _cmd_set_time(self, args: dict[str, object]) -> object:
        when = args.get("time")
        if isinstance(when, int):
            self._drift_ns = when - int(self._wall() * 1e9)
        else:
            self._drift_ns = 0
        return {}

    def _cmd_host_name(self, args: dict[str, object]) -> object:
        return {"host-name": self._profile.hostname}

    def _cmd_osinfo(self, args: dict[str, object]) -> object:
        o = self._profile.os
        info: dict[str, object] = {
            "name": o.name,
            "kernel-release": o.kernel_release,
            "version": o.version,
            "pretty-name": o.pretty_name,
            "version-id": o.version_id,
            "kernel-version": o.kernel_version,
            "machine": o.machine,
            "id": o.id,
        }
        if o.variant is not None:
            info["variant"] = o.variant
        if o.variant_id is not None:
            info["variant-id"] = o.variant_id
        return info

    def _cmd_timezone(self, args: dict[str, object]) -> object:
        result: dict[str, object] = {}
        if self._profile.timezone is not None:
            result["zone"] = self._profile.timezone
        result["offset"] = self._profile.tz_offset
        return result

    def _cmd_users(self, args: dict[str, object]) -> object:
        users = []
        for user in self._profile.users:
            entry: dict[str, object] = {"user": user.name, "login-time": QFloat(user.login_time)}
            if user.domain is not None:
                entry["domain"] = user.domain
            users.append(entry)
        return users

    def _cmd_load(self, args: dict[str, object]) -> object:
        l1, l5, l15 = self._loads()
        return {"load1m": QFloat(l1), "load5m": QFloat(l5), "load15m": QFloat(l15)}

    def _cmd_interfaces(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        result = []
        for nic in self._profile.interfaces:
            entry: dict[str, object] = {"name": nic.name}
            if nic.addresses:
                entry["ip-addresses"] = [
                    {"ip-address-type": a.family, "ip-address": a.address, "prefix": a.prefix}
                    for a in nic.addresses
                ]
            if nic.statistics and self._era.nic_statistics:
                rx = self._counter(nic.rx_bytes, nic.rx_rate, t)
                tx = self._counter(nic.tx_bytes, nic.tx_rate, t)
                entry["statistics"] = {
                    "tx-packets": nic.tx_packets + (tx - nic.tx_bytes) // 900,
                    "tx-errs": 0,
                    "rx-bytes": rx,
                    "rx-dropped": 0,
                    "rx-packets": nic.rx_packets + (rx - nic.rx_bytes) // 1200,
                    "rx-errs": 0,
                    "tx-bytes": tx,
                    "tx-dropped": 0,
                }
            if nic.mac:
                entry["hardware-address"] = nic.mac
            result.append(entry)
        return result

    def _cmd_routes(self, args: dict[str, object]) -> object:
        nic = self._profile.interfaces[-1].name if self._profile.interfaces else "eth0"
        return [
            {
                "iface": nic,
                "destination": "0.0.0.0",
                "metric": 100,
                "gateway": "10.0.0.1",
                "mask": "0.0.0.0",
                "irtt": 0,
                "flags": 3,
                "refcnt": 0,
                "use": 0,
                "window": 0,
                "mtu": 0,
                "version": 4,
            },
            {
                "iface": nic,
                "destination": "10.0.0.0",
                "metric": 100,
                "gateway": "0.0.0.0",
                "mask": "255.255.0.0",
                "irtt": 0,
                "flags": 1,
                "refcnt": 0,
                "use": 0,
                "window": 0,
                "mtu": 0,
                "version": 4,
            },
        ]

    def _disk_address(self, fs_disk: Disk) -> dict[str, object]:
        address: dict[str, object] = {
            "bus-type": fs_disk.bus_type,
            "bus": 0,
            "unit": 0,
            "pci-controller": {"bus": 0, "slot": fs_disk.pci_slot, "domain": 0, "function": 0},
        }
        if fs_disk.serial is not None and self._era.disk_serial:
            address["serial"] = fs_disk.serial
        if self._era.disk_dev:
            address["dev"] = fs_disk.dev
        address["target"] = 0
        return address

    def _cmd_fsinfo(self, args: dict[str, object]) -> object:
        result = []
        usage = self._era.fs_usage
        for fs in self._profile.filesystems:
            entry: dict[str, object] = {"name": fs.name}
            if usage:
                entry["total-bytes"] = fs.total_bytes
            entry["mountpoint"] = fs.mountpoint
            entry["disk"] = [self._disk_address(fs.disk)] if fs.disk is not None else []
            if usage:
                entry["used-bytes"] = fs.used_bytes
            entry["type"] = fs.type
            result.append(entry)
        return result

    def _disks(self) -> list[Disk]:
        seen: dict[str, Disk] = {}
        for fs in self._profile.filesystems:
            if fs.disk is not None:
                seen.setdefault(fs.disk.dev, fs.disk)
        return list(seen.values())

    def _cmd_disks(self, args: dict[str, object]) -> object:
        result: list[object] = []
        for disk in self._disks():
            if self._profile.windows:
                result.append(
                    {"name": disk.dev, "partition": False, "address": self._disk_address(disk)}
                )
                continue
            result.append(
                {
                    "name": disk.dev,
                    "dependencies": [],
                    "partition": False,
                    "address": self._disk_address(disk),
                }
            )
            if disk.dev.endswith("a"):
                result.append(
                    {"name": disk.dev + "1", "dependencies": [disk.dev], "partition": True}
                )
        return result

    def _cmd_diskstats(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        result = []
        for minor, disk in enumerate(self._disks()):
            dev = disk.dev.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
            reads = self._counter(12_000 + minor * 1000, 3.0 * self._profile.load, t)
            writes = self._counter(40_000 + minor * 3000, 8.0 * self._profile.load, t)
            stats = {
                "discard-sectors": 0,
                "write-ios": writes,
                "discard-ios": 0,
                "discard-ticks": 0,
                "weight-ticks": writes * 3,
                "read-ios": reads,
                "flush-ios": writes // 10,
                "write-sectors": writes * 16,
                "write-merges": writes // 4,
                "write-ticks": writes * 2,
                "ios-pgr": 0,
                "read-sectors": reads * 24,
                "read-merges": reads // 8,
                "total-ticks": (reads + writes) * 2,
                "discard-merges": 0,
                "flush-ticks": writes // 5,
                "read-ticks": reads * 2,
            }
            result.append({"name": dev, "stats": stats, "minor": minor * 16, "major": 253})
        return result

    def _cmd_cpustats(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        per_cpu = max(0.01, self._profile.load / max(1, self._profile.vcpus))
        result = []
        for cpu in range(self._profile.vcpus):
            busy = self._counter(15_000 + cpu * 500, 100 * per_cpu, t)
            idle = self._counter(150_000 + cpu * 900, 100 * (1 - min(per_cpu, 0.95)), t)
            result.append(
                {
                    "cpu": cpu,
                    "guestnice": 0,
                    "idle": idle,
                    "steal": 70 + cpu * 10,
                    "iowait": 580 + cpu * 200,
                    "system": busy // 2,
                    "guest": 0,
                    "nice": 0,
                    "irq": 0,
                    "type": "linux",
                    "user": busy,
                    "softirq": 290 + cpu * 80,
                }
            )
        return result

    def _cmd_vcpus(self, args: dict[str, object]) -> object:
        return [
            {"online": True, "can-offline": cpu != 0, "logical-id": cpu}
            for cpu in reversed(range(self._profile.vcpus))
        ]

    def _cmd_set_vcpus(self, args: dict[str, object]) -> object:
        vcpus = args["vcpus"]
        assert isinstance(vcpus, list)
        if not vcpus:
            raise CommandError("Parameter 'vcpus' expects non-empty list")
        return len(vcpus)

    def _cmd_memory_block_info(self, args: dict[str, object]) -> object:
        return {"size": 134217728}

    def _cmd_memory_blocks(self, args: dict[str, object]) -> object:
        count = min(128, self._profile.memory_bytes // 134217728)
        return [
            {"online": True, "can-offline": i != 0, "phys-index": i} for i in reversed(range(count))
        ]

    def _cmd_set_memory_blocks(self, args: dict[str, object]) -> object:
        blocks = args["mem-blks"]
        assert isinstance(blocks, list)
        return [
            {
                "phys-index": b.get("phys-index", 0) if isinstance(b, dict) else 0,
                "response": "success",
            }
            for b in blocks
        ]

    def _cmd_devices(self, args: dict[str, object]) -> object:
        date = 1_700_000_000 * 10**9
        return [
            {
                "driver-name": "netkvm",
                "driver-date": date,
                "driver-version": "100.94.104.24900",
                "id": {"type": "pci", "vendor-id": 6900, "device-id": 4096},
            },
            {
                "driver-name": "viostor",
                "driver-date": date,
                "driver-version": "100.94.104.24900",
                "id": {"type": "pci", "vendor-id": 6900, "device-id": 4097},
            },
        ]

    def _cmd_set_password(self, args: dict[str, object]) -> object:
        password = args["password"]
        assert isinstance(password, str)
        _b64decode(password)
        return {}

    def _ssh_keys(self, args: dict[str, object]) -> list[str]:
        username = args["username"]
        assert isinstance(username, str)
        known = {"root", "ops"} | {u.name for u in self._profile.users}
        if username not in known:
            raise CommandError(f"failed to lookup user '{username}'")
        if self._keys is None:
            self._keys = {}
        return self._keys.setdefault(username, [])

    def _cmd_ssh_get(self, args: dict[str, object]) -> object:
        return {"keys": list(self._ssh_keys(args))}

    def _cmd_ssh_add(self, args: dict[str, object]) -> object:
        keys = self._ssh_keys(args)
        new = args["keys"]
        assert isinstance(new, list)
        for key in new:
            if not key or str(key).startswith("#"):
                raise CommandError(f"invalid OpenSSH public key: '{key}'")
        if args.get("reset"):
            keys.clear()
        keys.extend(str(k) for k in new if k not in keys)
        return {}

    def _cmd_ssh_remove(self, args: dict[str, object]) -> object:
        keys = self._ssh_keys(args)
        gone = args["keys"]
        assert isinstance(gone, list)
        keys[:] = [k for k in keys if k not in gone]
        return {}

    # freeze and thaw

    def _cmd_fsfreeze_status(self, args: dict[str, object]) -> object:
        return "frozen" if self._frozen else "thawed"

    def _cmd_fsfreeze_freeze(self, args: dict[str, object]) -> object:
        self._frozen = True
        self._frozen_at = self._clock()
        return len(self._profile.filesystems)

    def _cmd_fsfreeze_freeze_list(self, args: dict[str, object]) -> object:
        wanted = args.get("mountpoints")
        self._frozen = True
        self._frozen_at = self._clock()
        if wanted is None:
            return len(self._profile.filesystems)
        assert isinstance(wanted, list)
        mounts = {fs.mountpoint for fs in self._profile.filesystems}
        return sum(1 for m in wanted if m in mounts)

    def _cmd_fsfreeze_thaw(self, args: dict[str, object]) -> object:
        if not self._frozen:
            return 0
        held = self._clock() - self._frozen_at
        self._frozen = False
        if self._profile.windows and held > 10.0:
            # VSS released the writes by itself after 10 s (qga/vss-win32/requester.cpp);
            # the agent is thawed again all the same.
            raise CommandError("couldn't hold writes: fsfreeze is limited up to 10 seconds")
        return len(self._profile.filesystems)

    def _cmd_fstrim(self, args: dict[str, object]) -> object:
        if not self._era.fstrim_paths:
            return {}  # before 2.4 guest-fstrim returned nothing
        minimum = args.get("minimum", 0)
        paths = []
        for fs in self._profile.filesystems:
            free = max(0, fs.total_bytes - fs.used_bytes)
            paths.append({"path": fs.mountpoint, "trimmed": free // 3, "minimum": minimum})
        return {"paths": paths}

    # power

    def _cmd_shutdown(self, args: dict[str, object]) -> object:
        mode = args.get("mode", "powerdown")
        if mode not in ("powerdown", "halt", "reboot"):
            raise CommandError("Parameter 'mode' expects 'halt', 'powerdown' or 'reboot'")
        now = self._clock()
        if mode == "reboot":
            self._restart()
            self._frozen = False
            self._resume_at = now + 5.0
        else:
            self._down = True
            self._power_off = mode == "powerdown"
        return _NO_REPLY

    def _suspend(self, mode: str) -> object:
        if mode == "hybrid" and self._profile.os.id == "alpine":
            raise CommandError("the requested suspend mode is not supported by the guest")
        self._resume_at = self._clock() + 10.0
        return _NO_REPLY

    def _cmd_suspend_ram(self, args: dict[str, object]) -> object:
        return self._suspend("ram")

    def _cmd_suspend_disk(self, args: dict[str, object]) -> object:
        return self._suspend("disk")

    def _cmd_suspend_hybrid(self, args: dict[str, object]) -> object:
        return self._suspend("hybrid")

    # files

    def _handle_for(self, args: dict[str, object]) -> _Handle:
        number = args["handle"]
        assert isinstance(number, int)
        handle = self._handles.get(number) if self._handles is not None else None
        if handle is None:
            raise CommandError(f"handle '{number}' has not been found")
        return handle

    def _cmd_file_open(self, args: dict[str, object]) -> object:
        path = args["path"]
        mode = args.get("mode", "r")
        assert isinstance(path, str) and isinstance(mode, str)
        flags = _OPEN_MODES.get(mode)
        if flags is None:
            raise CommandError(f"invalid file open mode '{mode}'")
        readable, writable, create, truncate, append = flags
        windows = self._profile.windows
        key = _norm(path, windows)
        found = self._lookup(key)

        def fail(reason: str) -> CommandError:
            if windows:
                return CommandError(f"failed to open file '{path}': {_WIN_ERRORS[reason]}")
            return CommandError(f"failed to open file '{path}' (mode: '{mode}'): {reason}")

        if found is False:
            parent, _ = _split(key, windows)
            parent_found = self._lookup(parent)
            if not create or parent_found is not None:
                raise fail("No such file or directory")
        if found is None and writable:
            raise fail("Is a directory")
        if writable and (truncate or found is False):
            data = self._write_target(key, path)
            if truncate:
                del data[:]
            self._touch(key)
        if self._handles is None:
            self._handles = {}
        number = self._next_handle
        self._next_handle += 1
        self._handles[number] = _Handle(key, path, readable, writable, append, found is None)
        return number

    def _touch(self, key: str) -> None:
        if self._overlay is not None:
            self._overlay.mtimes[key] = int(self._wall())

    def _cmd_file_close(self, args: dict[str, object]) -> object:
        self._handle_for(args)
        assert self._handles is not None
        number = args["handle"]
        assert isinstance(number, int)
        del self._handles[number]
        return {}

    def _cmd_file_flush(self, args: dict[str, object]) -> object:
        self._handle_for(args)
        return {}

    def _cmd_file_read(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        count = args.get("count", _FILE_READ_DEFAULT)
        assert isinstance(count, int)
        if count < 0 or count > _FILE_READ_MAX:
            raise CommandError(f"value '{count}' is invalid for argument count")
        if handle.is_dir:
            raise CommandError("failed to read file: Is a directory")
        if not handle.readable:
            raise CommandError("failed to read file: Bad file descriptor")
        found = self._lookup(handle.path)
        content = found if isinstance(found, bytes) else b""
        chunk = content[handle.pos : handle.pos + count]
        handle.pos += len(chunk)
        if count > 0 and len(chunk) < count:
            handle.eof = True
        return {
            "count": len(chunk),
            "buf-b64": base64.b64encode(chunk).decode("ascii"),
            "eof": handle.eof,
        }

    def _cmd_file_write(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        encoded = args["buf-b64"]
        assert isinstance(encoded, str)
        data = _b64decode(encoded)
        count = args.get("count", len(data))
        assert isinstance(count, int)
        if count < 0 or count > len(data):
            raise CommandError(f"value '{count}' is invalid for argument count")
        if not handle.writable or handle.is_dir:
            raise CommandError("failed to write to file: Bad file descriptor")
        target = self._write_target(handle.path, handle.shown)
        if handle.append:
            handle.pos = len(target)
        if handle.pos > len(target):
            target.extend(b"\x00" * (handle.pos - len(target)))
        target[handle.pos : handle.pos + count] = data[:count]
        handle.pos += count
        self._touch(handle.path)
        return {"count": count, "eof": False}

    def _cmd_file_seek(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        offset = args["offset"]
        whence = args["whence"]
        assert isinstance(offset, int)
        origins: dict[object, int] = {0: 0, 1: handle.pos, 2: self._size_of(handle.path)}
        origins.update({"set": origins[0], "cur": origins[1], "end": origins[2]})
        base = origins.get(whence)
        if base is None:
            raise CommandError(f"invalid whence code {whence}")
        position = base + offset
        if position < 0:
            raise CommandError("failed to seek file: Invalid argument")
        handle.pos = position
        handle.eof = False
        return {"eof": False, "position": position}

    # exec

    def _cmd_exec(self, args: dict[str, object]) -> object:
        path = args["path"]
        argv = args.get("arg", [])
        capture = args.get("capture-output", False)
        assert isinstance(path, str) and isinstance(argv, list)
        words = [str(a) for a in argv]
        stdin = b""
        if isinstance(args.get("input-data"), str):
            stdin = _b64decode(str(args["input-data"]))
        result = self._simulate(path, words, stdin)
        if result is None:
            raise CommandError(
                "Guest agent command failed, error was 'Failed to execute child process "
                f"\u201c{path}\u201d (No such file or directory)'"
            )
        exitcode, out, err, duration = result
        if capture == "merged":
            out, err = out + err, b""
        elif capture in ("none", False):
            out = err = b""
        elif capture == "stdout":
            err = b""
        elif capture == "stderr":
            out = b""
        if self._exec is None:
            self._exec = {}
        pid = self._next_pid
        self._next_pid += 1
        self._exec[pid] = _Process(
            self._clock() + duration, exitcode, None, out, err, bool(capture)
        )
        return {"pid": pid}

    def _cmd_exec_status(self, args: dict[str, object]) -> object:
        pid = args["pid"]
        assert isinstance(pid, int)
        process = self._exec.get(pid) if self._exec is not None else None
        if process is None:
            raise CommandError("Invalid parameter 'pid'")
        if self._clock() < process.done_at:
            return {"exited": False}
        assert self._exec is not None
        del self._exec[pid]
        status: dict[str, object] = {}
        if process.exitcode is not None:
            status["exitcode"] = process.exitcode
        if process.signal is not None:
            status["signal"] = process.signal
        if process.out:
            status["out-data"] = base64.b64encode(process.out[:_EXEC_OUTPUT_MAX]).decode()
            status["out-truncated"] = len(process.out) > _EXEC_OUTPUT_MAX
        if process.err:
            status["err-data"] = base64.b64encode(process.err[:_EXEC_OUTPUT_MAX]).decode()
            status["err-truncated"] = len(process.err) > _EXEC_OUTPUT_MAX
        status["exited"] = True
        return status

    def _simulate(
        self, path: str, argv: list[str], stdin: bytes
    ) -> tuple[int, bytes, bytes, float] | None:
        """(exit code, stdout, stderr, seconds it runs), or None if `path` cannot run."""
        program = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        if program.endswith(".exe"):
            program = program[:-4]
        if program in ("sh", "bash", "dash", "ash"):
            if len(argv) >= 4 and argv[0] == "-c" and argv[2] == "qgadash-ls":
                # qgadash's listing script: lines, or NUL-ended records if it printf's them
                return self._list_command(argv[3], nul="\\000" in argv[1])
            if argv and argv[0] == "-c" and len(argv) >= 2:
                return self._shell(argv[1], stdin)
            return 0, b"", b"", 0.02
        if program == "powershell" and self._profile.windows:
            return self._powershell(argv, stdin)
        if program in _PROGRAMS or program in ("cmd", "powershell"):
            return self._program(program, argv, stdin)
        found = self._lookup(_norm(path, self._profile.windows))
        if isinstance(found, bytes) and found:
            return 0, b"", b"", 0.02
        return None

    def _list_command(self, directory: str, nul: bool = False) -> tuple[int, bytes, bytes, float]:
        windows = self._profile.windows
        found = self._lookup(_norm(directory, windows))
        if found is False:
            return 1, b"", f"qgadash-ls: {directory}: No such file or directory\n".encode(), 0.02
        if found is not None:
            return 1, b"", f"qgadash-ls: {directory}: Not a directory\n".encode(), 0.02
        end = "\0" if nul else "\n"
        lines = [
            f"{mode:x} {size} {mtime} {name}{end}"
            for mode, size, mtime, name in self._listing(directory)
        ]
        return 0, "".join(lines).encode("utf-8", "replace"), b"", 0.03

    def _powershell(self, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes, float]:
        """powershell.exe as Windows PowerShell 5.1 reads its command line (see
        qgadash.sim.powershell): what follows -Command is script text, not $args."""
        invocation = powershell.parse_command_line(argv, stdin)

        def listing(path: str) -> list[tuple[int, int, int, str]] | bool | None:
            found = self._lookup(_norm(path, True))
            if found is False:
                return False
            if found is not None:  # a file lists as itself
                name = path.replace("/", "\\").rstrip("\\").rsplit("\\", 1)[-1]
                return [(_S_IFREG | 0o644, len(found) if isinstance(found, bytes) else 0, 0, name)]
            return self._listing(path)

        def create(path: str) -> None:
            self._write_target(_norm(path, True), path)
            self._touch(_norm(path, True))

        code, out, err = powershell.run(invocation, powershell.Guest(listing, create))
        return code, out, err, 0.3

    def _shell(self, script: str, stdin: bytes) -> tuple[int, bytes, bytes, float]:
        try:
            words = shlex.split(script)
        except ValueError:
            return 2, b"", b"sh: 1: Syntax error: Unterminated quoted string\n", 0.01
        if not words:
            return 0, b"", b"", 0.01
        program = words[0].rsplit("/", 1)[-1]
        if program == "exit":
            code = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            return code, b"", b"", 0.01
        if program in _PROGRAMS:
            return self._program(program, words[1:], stdin)
        return 127, b"", f"sh: 1: {words[0]}: not found\n".encode(), 0.01

    def _program(
        self, program: str, argv: list[str], stdin: bytes
    ) -> tuple[int, bytes, bytes, float]:
        p = self._profile
        if program == "echo":
            return 0, (" ".join(argv) + "\n").encode(), b"", 0.01
        if program == "true":
            return 0, b"", b"", 0.01
        if program == "false":
            return 1, b"", b"", 0.01
        if program == "hostname":
            return 0, (p.hostname + "\n").encode(), b"", 0.01
        if program == "uname":
            if "-a" in argv:
                text = (
                    f"Linux {p.hostname} {p.os.kernel_release} {p.os.kernel_version} "
                    f"{p.os.machine} GNU/Linux\n"
                )
            elif "-r" in argv:
                text = p.os.kernel_release + "\n"
            else:
                text = "Linux\n"
            return 0, text.encode(), b"", 0.01
        if program == "sleep":
            try:
                seconds = float(argv[0]) if argv else 0.0
            except ValueError:
                return 1, b"", f"sleep: invalid time interval '{argv[0]}'\n".encode(), 0.01
            return 0, b"", b"", max(0.0, min(seconds, 3600.0))
        if program == "cat":
            if not argv:
                return 0, stdin, b"", 0.01
            out = bytearray()
            for name in argv:
                found = self._lookup(_norm(name, p.windows))
                if found is False:
                    return 1, bytes(out), f"cat: {name}: No such file or directory\n".encode(), 0.01
                if found is None:
                    return 1, bytes(out), f"cat: {name}: Is a directory\n".encode(), 0.01
                assert isinstance(found, bytes)
                out += found
            return 0, bytes(out), b"", 0.01
        if program == "ls":
            directory = next((a for a in argv if not a.startswith("-")), "/")
            found = self._lookup(_norm(directory, p.windows))
            if found is False:
                message = f"ls: cannot access '{directory}': No such file or directory\n"
                return 2, b"", message.encode(), 0.01
            names = "".join(
                row[3] + "\n"
                for row in self._listing(directory)
                if not row[3].startswith(".") or "-a" in argv
            )
            return 0, names.encode("utf-8", "replace"), b"", 0.01
        if program == "id":
            return 0, b"uid=0(root) gid=0(root) groups=0(root)\n", b"", 0.01
        if program == "uptime":
            up = int(self._elapsed()) + 86400
            l1, l5, l15 = self._loads()
            text = (
                f" up {up // 86400} day, {up % 86400 // 3600}:{up % 3600 // 60:02d},  "
                f"1 user,  load average: {l1:.2f}, {l5:.2f}, {l15:.2f}\n"
            )
            return 0, text.encode(), b"", 0.01
        if program == "date":
            stamp = time.strftime(
                "%a %b %d %H:%M:%S UTC %Y", time.gmtime(self._guest_time_ns() / 1e9)
            )
            return 0, (stamp + "\n").encode(), b"", 0.01
        if program in ("cmd", "powershell"):
            text = " ".join(argv[1:]) if argv else ""
            return 0, (text + "\r\n").encode(), b"", 0.05
        return 127, b"", f"{program}: not found\n".encode(), 0.01


_PROGRAMS = frozenset(
    {"echo", "true", "false", "hostname", "uname", "sleep", "cat", "ls", "id", "uptime", "date"}
)
_WIN_ERRORS = {
    "No such file or directory": "The system cannot find the file specified.",
    "Is a directory": "Access is denied.",
}
_NO_REPLY = object()
_INFO_CACHE: dict[tuple[object, ...], str] = {}
_Handler = Callable[[GuestAgent, dict[str, object]], object]
_HANDLERS: dict[str, _Handler] = {
    "guest-sync": GuestAgent._cmd_sync,
    "guest-sync-delimited": GuestAgent._cmd_sync,
    "guest-ping": GuestAgent._cmd_ping,
    "guest-info": GuestAgent._cmd_info,
    "guest-get-time": GuestAgent._cmd_get_time,
    "guest-set-time": GuestAgent._cmd_set_time,
    "guest-get-host-name": GuestAgent._cmd_host_name,
    "guest-get-osinfo": GuestAgent._cmd_osinfo,
    "guest-get-timezone": GuestAgent._cmd_timezone,
    "guest-get-users": GuestAgent._cmd_users,
    "guest-get-load": GuestAgent._cmd_load,
    "guest-network-get-interfaces": GuestAgent._cmd_interfaces,
    "guest-network-get-route": GuestAgent._cmd_routes,
    "guest-get-fsinfo": GuestAgent._cmd_fsinfo,
    "guest-get-disks": GuestAgent._cmd_disks,
    "guest-get-diskstats": GuestAgent._cmd_diskstats,
    "guest-get-cpustats": GuestAgent._cmd_cpustats,
    "guest-get-vcpus": GuestAgent._cmd_vcpus,
    "guest-set-vcpus": GuestAgent._cmd_set_vcpus,
    "guest-get-memory-block-info": GuestAgent._cmd_memory_block_info,
    "guest-get-memory-blocks": GuestAgent._cmd_memory_blocks,
    "guest-set-memory-blocks": GuestAgent._cmd_set_memory_blocks,
    "guest-get-devices": GuestAgent._cmd_devices,
    "guest-set-user-password": GuestAgent._cmd_set_password,
    "guest-ssh-get-authorized-keys": GuestAgent._cmd_ssh_get,
    "guest-ssh-add-authorized-keys": GuestAgent._cmd_ssh_add,
    "guest-ssh-remove-authorized-keys": GuestAgent._cmd_ssh_remove,
    "guest-fsfreeze-status": GuestAgent._cmd_fsfreeze_status,
    "guest-fsfreeze-freeze": GuestAgent._cmd_fsfreeze_freeze,
    "guest-fsfreeze-freeze-list": GuestAgent._cmd_fsfreeze_freeze_list,
    "guest-fsfreeze-thaw": GuestAgent._cmd_fsfreeze_thaw,
    "guest-fstrim": GuestAgent._cmd_fstrim,
    "guest-shutdown": GuestAgent._cmd_shutdown,
    "guest-suspend-ram": GuestAgent._cmd_suspend_ram,
    "guest-suspend-disk": GuestAgent._cmd_suspend_disk,
    "guest-suspend-hybrid": GuestAgent._cmd_suspend_hybrid,
    "guest-file-open": GuestAgent._cmd_file_open,
    "guest-file-close": GuestAgent._cmd_file_close,
    "guest-file-flush": GuestAgent._cmd_file_flush,
    "guest-file-read": GuestAgent._cmd_file_read,
    "guest-file-write": GuestAgent._cmd_file_write,
    "guest-file-seek": GuestAgent._cmd_file_seek,
    "guest-exec": GuestAgent._cmd_exec,
    "guest-exec-status": GuestAgent._cmd_exec_status,
}


# --- helpers ------------------------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("Base64 data contains invalid characters") from None


def _is_int(value: object, unsigned: bool = False) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return _INT64[0] <= value < (1 << 64 if unsigned else _INT64[1])


def _type_ok(kind: str, value: object, name: str, era: _Era | None = None) -> bool:
    modern = era is not None and era.capture_modes
    if kind == "int":
        return _is_int(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "whence":
        if isinstance(value, str) and era is not None and not era.whence_names:
            return False  # before 2.6 whence was an integer only
        if isinstance(value, str):
            if value not in ("set", "cur", "end"):
                raise CommandError(f"Parameter '{name}' does not accept value '{value}'")
            return True
        return _is_int(value)
    if kind == "capture":  # a bool; since 8.0 also a GuestExecCaptureOutputMode
        if modern and isinstance(value, str):
            if value not in ("none", "stdout", "stderr", "separated", "merged"):
                raise CommandError(f"Parameter '{name}' does not accept value '{value}'")
            return True
        return isinstance(value, bool)
    raise AssertionError(kind)


def _check_args(
    schema: _Schema, args: dict[str, object], era: _Era | None = None
) -> dict[str, object]:
    """QEMU's input visitor: members in schema order, then anything left over."""
    for name, kind, required in schema:
        if name not in args:
            if required:
                raise CommandError(f"Parameter '{name}' is missing")
            continue
        value = args[name]
        if kind.startswith("["):
            if not isinstance(value, list):
                raise CommandError(f"Invalid parameter type for '{name}', expected: array")
            inner = kind[1:-1]
            for i, item in enumerate(value):
                if inner == "object":
                    if not isinstance(item, dict):
                        raise CommandError(
                            f"Invalid parameter type for '{name}[{i}]', expected: object"
                        )
                elif not _type_ok(inner, item, f"{name}[{i}]"):
                    raise CommandError(
                        f"Invalid parameter type for '{name}[{i}]', expected: {_TYPE_NAMES[inner]}"
                    )
        elif not _type_ok(kind, value, name, era):
            modern = era is not None and era.capture_modes
            if kind == "capture" and not modern:
                expected = "boolean"
            elif kind == "whence" and era is not None and not era.whence_names:
                expected = "integer"
            else:
                expected = _TYPE_NAMES[kind]
            raise CommandError(f"Invalid parameter type for '{name}', expected: {expected}")
    known = {name for name, _, _ in schema}
    for name in args:
        if name not in known:
            raise CommandError(f"Parameter '{name}' is unexpected")
    return args


def _return_text(ret: str, rid: object, wrong_ids: bool) -> str:
    if rid is None:
        return '{"return": ' + ret + "}"
    if wrong_ids:
        rid = rid + 1 if _is_int(rid) else f"not-{rid}"  # type: ignore[operator]
    return '{"return": ' + ret + ', "id": ' + dumps(wrap_floats(rid)) + "}"


def _error_text(error_class: str, desc: str, rid: object) -> str:
    error = '{"class": ' + dumps(error_class) + ', "desc": ' + dumps(desc) + "}"
    if rid is None:
        return '{"error": ' + error + "}"
    return '{"id": ' + dumps(wrap_floats(rid)) + ', "error": ' + error + "}"


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


def _mark_invalid(profile: GuestProfile) -> GuestProfile:
    """Mark free-text strings; the encoder swaps the mark for invalid UTF-8 bytes."""

    def mark(text: str) -> str:
        return text + _INVALID_MARK

    os_info = dataclasses.replace(
        profile.os,
        name=mark(profile.os.name),
        pretty_name=mark(profile.os.pretty_name),
        kernel_release=mark(profile.os.kernel_release),
    )
    return dataclasses.replace(
        profile,
        hostname=mark(profile.hostname),
        os=os_info,
        interfaces=tuple(
            dataclasses.replace(nic, name=mark(nic.name)) for nic in profile.interfaces
        ),
        filesystems=tuple(
            dataclasses.replace(fs, mountpoint=mark(fs.mountpoint)) for fs in profile.filesystems
        ),
        timezone=mark(profile.timezone or "UTC"),
    )


def _out_of_range(command: str, value: object) -> object:
    """Replies a careless client would trust: impossible numbers and wrong types."""
    huge = 2**80
    if command == "guest-get-fsinfo" and isinstance(value, list):
        return [dict(fs, **{"used-bytes": -5, "total-bytes": huge}) for fs in value] + [
            {
                "name": 42,
                "mountpoint": None,
                "type": ["ext4"],
                "used-bytes": "NaN",
                "total-bytes": "Infinity",
                "disk": "vda",
            }
        ]
    if command == "guest-network-get-interfaces" and isinstance(value, list):
        return [
            {
                "name": "eth0",
                "hardware-address": 525400123456,
                "ip-addresses": [
                    {"ip-address-type": "ipv5", "ip-address": "999.1.1.1", "prefix": 999},
                    {"ip-address-type": "ipv4", "ip-address": None, "prefix": -1},
                ],
                "statistics": {
                    "rx-bytes": "NaN",
                    "tx-bytes": -1,
                    "rx-packets": huge,
                    "tx-packets": 1.5e308,
                    "rx-errs": "0",
                    "tx-errs": None,
                    "rx-dropped": -huge,
                    "tx-dropped": True,
                },
            },
            {"name": None, "ip-addresses": "none"},
            "not-an-object",
        ]
    if command == "guest-get-host-name":
        return {"host-name": 12345}
    if command == "guest-get-osinfo":
        return {
            "id": None,
            "name": ["Linux"],
            "pretty-name": 7,
            "version": {"major": 1},
            "kernel-release": -1,
            "machine": True,
        }
    if command == "guest-get-users":
        return [{"user": None, "login-time": "yesterday"}, {"user": "x", "login-time": -huge}]
    if command == "guest-get-timezone":
        return {"zone": 0, "offset": huge}
    if command == "guest-get-time":
        return -1
    if command == "guest-get-load":
        return {"load1m": "NaN", "load5m": -1, "load15m": huge}
    if command == "guest-fsfreeze-status":
        return "melting"
    if command == "guest-get-vcpus":
        return [{"logical-id": "x", "online": "yes"}]
    if command == "guest-file-read":
        return {"count": huge, "buf-b64": "!!!not base64!!!", "eof": "maybe"}
    if command == "guest-exec-status":
        return {"exited": "true", "exitcode": huge, "out-data": 17}
    if command == "guest-exec":
        return {"pid": -huge}
    if command in ("guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-fsfreeze-freeze-list"):
        return -huge
    if command == "guest-get-disks":
        return [{"name": None, "partition": "no"}]
    return value
