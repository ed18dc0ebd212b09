"""Typed, defensive parsers for the agent's replies.

A reply comes from an untrusted guest. Each parser takes the decoded JSON `return`
value, tolerates missing optional members, and raises `ReplyShapeError` (an
`AgentProtocolError`) on a wrong type or an impossible number, so a lying agent becomes
an error on its own VM and never an exception of another kind.

Over 500 lines because it holds one short parser per reply the product reads (about
twenty-five), sharing the type-checking helpers at its top; a reader looks up one
parser at a time.
"""

from __future__ import annotations

import base64
import binascii
import enum
import operator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from qgadash.agent.commands import (
    commands_of_version,
    era_of,
    parse_version,
    unreported,
)
from qgadash.agent.errors import AgentProtocolError
from qgadash.agent.policy import NO_REPLY_COMMANDS

INT64_MAX = 2**63 - 1


class ReplyShapeError(AgentProtocolError):
    """A reply parsed as JSON but its members have the wrong type or range."""


# -- field readers -----------------------------------------------------------


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyShapeError(f"{what}: expected an object, got {_kind(value)}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ReplyShapeError(f"{what}: expected a list, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _opt_str(obj: dict[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReplyShapeError(f"{what}.{key}: expected a string, got {_kind(value)}")
    return value


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = _opt_str(obj, key, what)
    if value is None:
        raise ReplyShapeError(f"{what}.{key}: missing")
    return value


def _check_int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyShapeError(f"{where}: expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise ReplyShapeError(f"{where}: {value} is out of range")
    return value


def _opt_int(
    obj: dict[str, Any], key: str, what: str, lo: int = 0, hi: int = INT64_MAX
) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    return _check_int(value, f"{what}.{key}", lo, hi)


def _int(obj: dict[str, Any], key: str, what: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    value = _opt_int(obj, key, what, lo, hi)
    if value is None:
        raise ReplyShapeError(f"{what}.{key}: missing")
    return value


def _opt_bool(obj: dict[str, Any], key: str, what: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ReplyShapeError(f"{what}.{key}: expected true or false, got {_kind(value)}")
    return value


def _opt_float(obj: dict[str, Any], key: str, what: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyShapeError(f"{what}.{key}: expected a number, got {_kind(value)}")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")) or abs(result) > 1e15:
        raise ReplyShapeError(f"{what}.{key}: {value} is out of range")
    return result


def _b64(obj: dict[str, Any], key: str, what: str) -> bytes:
    text = _opt_str(obj, key, what)
    if text is None:
        return b""
    try:
        if len(text) <= _B64_CHUNK:
            return base64.b64decode(text, validate=True)
        # Megabytes of output, decoded by a worker thread: in slices, since one C call
        # holds the GIL for its whole length (16 MiB: ~100 ms of a stalled event loop).
        # Padding is legal only at the very end, as one call over the whole text checks.
        if len(text) % 4 or text.find("=", 0, len(text) - 2) >= 0:
            raise ValueError("padding")
        return b"".join(
            base64.b64decode(text[i : i + _B64_CHUNK], validate=True)
            for i in range(0, len(text), _B64_CHUNK)
        )
    except (binascii.Error, ValueError):
        raise ReplyShapeError(f"{what}.{key}: not valid base64") from None


_B64_CHUNK = 256 * 1024  # a multiple of 4: each slice is whole base64 quanta


# -- guest-info --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    enabled: bool
    success_response: bool


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """guest-info: the agent's version and the commands it offers (enabled or not).

    `listed` is False for agents whose guest-info lists no commands (qemu-ga 1.0): their
    `commands` are then what a qemu-ga of that version has, all taken as enabled.
    """

    version: str
    commands: tuple[CommandInfo, ...]
    listed: bool = True
    # Looked up on every poll: sets, not scans of `commands`.
    enabled_names: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    offered_names: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "enabled_names", frozenset(c.name for c in self.commands if c.enabled)
        )
        object.__setattr__(self, "offered_names", frozenset(c.name for c in self.commands))

    def enabled(self, name: str) -> bool:
        return name in self.enabled_names

    def offers(self, name: str) -> bool:
        return name in self.offered_names

    @property
    def era(self) -> str:
        """Which generation of qemu-ga this is, for people: "qemu-ga 2.5-2.9 (2015-2017)"."""
        return era_of(self.version)

    @property
    def cannot_report(self) -> tuple[str, ...]:
        """The dashboard's facts this agent has no command for ("OS", "load", ...)."""
        return unreported(self.offered_names)


def parse_info(value: Any) -> AgentInfo:
    obj = _obj(value, "guest-info")
    version = _str(obj, "version", "guest-info")
    listed = obj.get("supported_commands")
    if listed is None:
        # qemu-ga 1.0 lists nothing (supported_commands came with 1.1): its version says.
        names = sorted(commands_of_version(parse_version(version)))
        commands = [CommandInfo(n, True, n not in NO_REPLY_COMMANDS) for n in names]
        return AgentInfo(version, tuple(commands), listed=False)
    commands = []
    for i, item in enumerate(_list(listed, "guest-info.supported_commands")):
        what = f"guest-info.supported_commands[{i}]"
        entry = _obj(item, what)
        name = _str(entry, "name", what)
        # success-response came with qemu-ga 1.7; before it, the schema's table says.
        success = _opt_bool(entry, "success-response", what)
        commands.append(
            CommandInfo(
                name=name,
                enabled=_opt_bool(entry, "enabled", what) is not False,
                success_response=success if success is not None else name not in NO_REPLY_COMMANDS,
            )
        )
    return AgentInfo(version, tuple(commands))


# -- identity ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OsInfo:
    id: str | None
    name: str | None
    pretty_name: str | None
    version: str | None
    version_id: str | None
    kernel_release: str | None
    kernel_version: str | None
    machine: str | None
    variant: str | None


def parse_osinfo(value: Any) -> OsInfo:
    obj = _obj(value, "guest-get-osinfo")
    w = "guest-get-osinfo"
    return OsInfo(
        id=_opt_str(obj, "id", w),
        name=_opt_str(obj, "name", w),
        pretty_name=_opt_str(obj, "pretty-name", w),
        version=_opt_str(obj, "version", w),
        version_id=_opt_str(obj, "version-id", w),
        kernel_release=_opt_str(obj, "kernel-release", w),
        kernel_version=_opt_str(obj, "kernel-version", w),
        machine=_opt_str(obj, "machine", w),
        variant=_opt_str(obj, "variant", w),
    )


def parse_host_name(value: Any) -> str:
    return _str(_obj(value, "guest-get-host-name"), "host-name", "guest-get-host-name")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    domain: str | None
    login_time: float | None


def parse_users(value: Any) -> tuple[User, ...]:
    users = []
    for i, item in enumerate(_list(value, "guest-get-users")):
        w = f"guest-get-users[{i}]"
        obj = _obj(item, w)
        users.append(
            User(_str(obj, "user", w), _opt_str(obj, "domain", w), _opt_float(obj, "login-time", w))
        )
    return tuple(users)


@dataclass(frozen=True, slots=True)
class Timezone:
    zone: str | None
    offset_s: int


def parse_timezone(value: Any) -> Timezone:
    obj = _obj(value, "guest-get-timezone")
    w = "guest-get-timezone"
    return Timezone(_opt_str(obj, "zone", w), _int(obj, "offset", w, lo=-86400, hi=86400))


def parse_time(value: Any) -> int:
    """guest-get-time: nanoseconds since the epoch."""
    return _check_int(value, "guest-get-time", 0, INT64_MAX)


# -- freeze, trim ------------------------------------------------------------


class FreezeState(enum.Enum):
    THAWED = "thawed"
    FROZEN = "frozen"
    UNKNOWN = "unknown"


# guest-fsfreeze-status's answers as qemu-ga writes them, for callers holding the reply
# undecoded (a poll): the same mapping as parse_fsfreeze_status, without JSON.
FREEZE_STATUS_BODIES = {
    b'"thawed"': FreezeState.THAWED,
    b'"frozen"': FreezeState.FROZEN,
    b'"error"': FreezeState.UNKNOWN,
}


def parse_fsfreeze_status(value: Any) -> FreezeState:
    """thawed or frozen; qemu-ga up to 1.0 may also say "error" (a thaw failed, or a
    filesystem it froze is gone): the state is then not known."""
    if value == "thawed":
        return FreezeState.THAWED
    if value == "frozen":
        return FreezeState.FROZEN
    if value == "error":
        return FreezeState.UNKNOWN
    raise ReplyShapeError(f"guest-fsfreeze-status: expected thawed or frozen, got {value!r:.40}")


def parse_count(value: Any, command: str) -> int:
    """guest-fsfreeze-freeze(-list) and -thaw: how many filesystems changed state."""
    return _check_int(value, command, 0, 2**31 - 1)


@dataclass(frozen=True, slots=True)
class FstrimPath:
    path: str
    trimmed: int | None
    minimum: int | None
    error: str | None


def parse_fstrim(value: Any) -> tuple[FstrimPath, ...]:
    obj = _obj(value, "guest-fstrim")
    out = []
    for i, item in enumerate(_list(obj.get("paths", []), "guest-fstrim.paths")):
        w = f"guest-fstrim.paths[{i}]"
        entry = _obj(item, w)
        out.append(
            FstrimPath(
                _str(entry, "path", w),
                _opt_int(entry, "trimmed", w),
                _opt_int(entry, "minimum", w),
                _opt_str(entry, "error", w),
            )
        )
    return tuple(out)


# -- storage -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filesystem:
    name: str
    mountpoint: str
    type: str
    used_bytes: int | None
    total_bytes: int | None
    devices: tuple[str, ...]

    @property
    def used_fraction(self) -> float | None:
        if self.used_bytes is None or not self.total_bytes:
            return None
        return min(1.0, self.used_bytes / self.total_bytes)


def parse_fsinfo(value: Any) -> tuple[Filesystem, ...]:
    out = []
    for i, item in enumerate(_list(value, "guest-get-fsinfo")):
        w = f"guest-get-fsinfo[{i}]"
        obj = _obj(item, w)
        devices = []
        for j, disk in enumerate(_list(obj.get("disk", []), f"{w}.disk")):
            d = _obj(disk, f"{w}.disk[{j}]")
            dev = _opt_str(d, "dev", f"{w}.disk[{j}]") or _opt_str(d, "serial", f"{w}.disk[{j}]")
            if dev:
                devices.append(dev)
        out.append(
            Filesystem(
                name=_str(obj, "name", w),
                mountpoint=_str(obj, "mountpoint", w),
                type=_str(obj, "type", w),
                used_bytes=_opt_int(obj, "used-bytes", w),
                total_bytes=_opt_int(obj, "total-bytes", w),
                devices=tuple(devices),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Disk:
    name: str
    partition: bool
    alias: str | None
    dependencies: tuple[str, ...]


def parse_disks(value: Any) -> tuple[Disk, ...]:
    out = []
    for i, item in enumerate(_list(value, "guest-get-disks")):
        w = f"guest-get-disks[{i}]"
        obj = _obj(item, w)
        deps = tuple(
            _check_str(dep, f"{w}.dependencies")
            for dep in _list(obj.get("dependencies", []), f"{w}.dependencies")
        )
        out.append(
            Disk(
                _str(obj, "name", w),
                bool(_opt_bool(obj, "partition", w)),
                _opt_str(obj, "alias", w),
                deps,
            )
        )
    return tuple(out)


def _check_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ReplyShapeError(f"{where}: expected a string, got {_kind(value)}")
    return value


@dataclass(frozen=True, slots=True)
class DiskStat:
    name: str
    major: int | None
    minor: int | None
    counters: dict[str, int]


def parse_diskstats(value: Any) -> tuple[DiskStat, ...]:
    out = []
    for i, item in enumerate(_list(value, "guest-get-diskstats")):
        w = f"guest-get-diskstats[{i}]"
        obj = _obj(item, w)
        stats = _obj(obj.get("stats", {}), f"{w}.stats")
        counters = {
            key: _check_int(v, f"{w}.stats.{key}", 0, INT64_MAX)
            for key, v in stats.items()
            if v is not None
        }
        out.append(
            DiskStat(
                _str(obj, "name", w), _opt_int(obj, "major", w), _opt_int(obj, "minor", w), counters
            )
        )
    return tuple(out)


# -- network -----------------------------------------------------------------


class IpAddress(NamedTuple):
    """Immutable like the dataclasses here, but a NamedTuple: one is built per address on
    every poll, and a tuple is several times cheaper to build than a frozen dataclass."""

    address: str
    prefix: int
    family: str  # "ipv4" | "ipv6"


class InterfaceStats(NamedTuple):
    """A NamedTuple for the same reason: rebuilt for every interface on every poll."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errs: int
    tx_errs: int
    rx_dropped: int
    tx_dropped: int


class Interface(NamedTuple):
    """A NamedTuple too: one per NIC per poll."""

    name: str
    mac: str | None
    addresses: tuple[IpAddress, ...]
    stats: InterfaceStats | None


_STAT_KEYS = (
    "rx-bytes",
    "tx-bytes",
    "rx-packets",
    "tx-packets",
    "rx-errs",
    "tx-errs",
    "rx-dropped",
    "tx-dropped",
)


_address_fields = operator.itemgetter("ip-address", "prefix", "ip-address-type")
_stat_fields = operator.itemgetter(*_STAT_KEYS)
_INT_ONLY = {int}


def parse_interfaces(
    value: Any, previous: tuple[Interface, ...] | None = None
) -> tuple[Interface, ...]:
    """Parsed on every poll, since the statistics change: type checks inline, paths built
    only on error. `previous` is the last poll's result: an address equal to the one in
    the same place then (one comparison in C) is reused instead of checked and built anew.
    """
    cmd = "guest-network-get-interfaces"
    out = []
    before = previous or ()
    for i, obj in enumerate(_list(value, cmd)):
        if type(obj) is not dict:
            _obj(obj, f"{cmd}[{i}]")
        name = obj.get("name")
        mac = obj.get("hardware-address")
        if type(name) is not str or (mac is not None and type(mac) is not str):
            w = f"{cmd}[{i}]"
            _str(obj, "name", w)
            _opt_str(obj, "hardware-address", w)
        known = before[i].addresses if i < len(before) else ()
        addresses = []
        fresh = False  # any address not reused from `known`
        raw_addresses = obj.get("ip-addresses", ())
        if type(raw_addresses) is not list and raw_addresses != ():
            _list(raw_addresses, f"{cmd}[{i}].ip-addresses")
        for j, a in enumerate(raw_addresses):
            if j < len(known) and type(a) is dict:
                try:
                    fields = _address_fields(a)
                except KeyError:
                    fields = None
                if len(a) == 3 and fields == known[j] and type(fields[1]) is int:
                    addresses.append(known[j])
                    continue
            fresh = True
            family = a.get("ip-address-type") if type(a) is dict else None
            address = a.get("ip-address") if type(a) is dict else None
            prefix = a.get("prefix") if type(a) is dict else None
            if (
                family not in ("ipv4", "ipv6")
                or type(address) is not str
                or type(prefix) is not int
                or not 0 <= prefix <= 128
            ):
                raise ReplyShapeError(
                    f"{cmd}[{i}].ip-addresses[{j}]: expected ip-address-type ipv4/ipv6, "
                    "a string ip-address and a prefix from 0 to 128"
                )
            addresses.append(IpAddress(address, prefix, family))
        stats = None
        raw_stats = obj.get("statistics")
        if raw_stats is not None:
            if type(raw_stats) is not dict:
                _obj(raw_stats, f"{cmd}[{i}].statistics")
            stats = _interface_stats(raw_stats, f"{cmd}[{i}].statistics")
        reuse = not fresh and len(addresses) == len(known)
        out.append(Interface(name, mac, known if reuse else tuple(addresses), stats))
    return tuple(out)


def _interface_stats(raw: dict[str, Any], where: str) -> InterfaceStats:
    """All eight counters as non-negative integers (a missing or null one counts as 0)."""
    if len(raw) == 8:
        try:
            values = _stat_fields(raw)
        except KeyError:
            pass
        else:
            if set(map(type, values)) == _INT_ONLY and 0 <= min(values) <= max(values) <= INT64_MAX:
                return InterfaceStats._make(values)
    checked = []
    for key in _STAT_KEYS:
        v = raw.get(key)
        if v is None:  # missing or null; `false`, "" or [] are the wrong type, not 0
            v = 0
        if type(v) is not int or not 0 <= v <= INT64_MAX:
            _check_int(v, f"{where}.{key}", 0, INT64_MAX)
        checked.append(v)
    return InterfaceStats._make(checked)


# -- users' SSH keys --------------------------------------------------------


def parse_ssh_keys(value: Any) -> tuple[str, ...]:
    """guest-ssh-get-authorized-keys: `{"keys": [str, ...]}` (the guest's text, to be
    shown as plain text only)."""
    obj = _obj(value, "guest-ssh-get-authorized-keys")
    keys = _list(obj.get("keys"), "guest-ssh-get-authorized-keys.keys")
    return tuple(
        _check_str(k, f"guest-ssh-get-authorized-keys.keys[{i}]") for i, k in enumerate(keys)
    )


# -- cpu, load ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vcpu:
    logical_id: int
    online: bool
    can_offline: bool | None


def parse_vcpus(value: Any) -> tuple[Vcpu, ...]:
    out = []
    for i, item in enumerate(_list(value, "guest-get-vcpus")):
        w = f"guest-get-vcpus[{i}]"
        obj = _obj(item, w)
        out.append(
            Vcpu(
                _int(obj, "logical-id", w),
                _opt_bool(obj, "online", w) is True,
                _opt_bool(obj, "can-offline", w),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CpuStat:
    cpu: int
    counters: dict[str, int]


def parse_cpustats(value: Any) -> tuple[CpuStat, ...]:
    out = []
    for i, item in enumerate(_list(value, "guest-get-cpustats")):
        w = f"guest-get-cpustats[{i}]"
        obj = _obj(item, w)
        counters = {
            key: _check_int(v, f"{w}.{key}", 0, INT64_MAX)
            for key, v in obj.items()
            if key not in ("type", "cpu") and v is not None
        }
        out.append(CpuStat(_int(obj, "cpu", w, 0, 2**20), counters))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Load:
    load1: float
    load5: float
    load15: float


def parse_load(value: Any) -> Load:
    """guest-get-load (qemu-ga 10.0+): `load1m`, `load5m`, `load15m`."""
    obj = _obj(value, "guest-get-load")
    w = "guest-get-load"
    values = []
    for key in ("load1m", "load5m", "load15m"):
        v = _opt_float(obj, key, w)
        if v is None or v < 0:
            raise ReplyShapeError(f"{w}.{key}: expected a non-negative number")
        values.append(v)
    return Load(*values)


# -- files -------------------------------------------------------------------


def parse_file_handle(value: Any) -> int:
    return _check_int(value, "guest-file-open", 0, INT64_MAX)


@dataclass(frozen=True, slots=True)
class FileChunk:
    data: bytes
    eof: bool


def parse_file_read(value: Any, max_count: int) -> FileChunk:
    obj = _obj(value, "guest-file-read")
    w = "guest-file-read"
    count = _int(obj, "count", w)
    data = _b64(obj, "buf-b64", w)
    if count != len(data) or count > max_count:
        raise ReplyShapeError(f"{w}: count {count} does not match the {len(data)} bytes sent")
    return FileChunk(data, _opt_bool(obj, "eof", w) is True)


def parse_file_write(value: Any) -> int:
    obj = _obj(value, "guest-file-write")
    return _int(obj, "count", "guest-file-write")


def parse_file_seek(value: Any) -> int:
    obj = _obj(value, "guest-file-seek")
    return _int(obj, "position", "guest-file-seek")


# -- exec --------------------------------------------------------------------


def parse_exec(value: Any) -> int:
    return _int(_obj(value, "guest-exec"), "pid", "guest-exec", 0, 2**31 - 1)


@dataclass(frozen=True, slots=True)
class ExecStatus:
    exited: bool
    exitcode: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool


def parse_exec_status(value: Any) -> ExecStatus:
    obj = _obj(value, "guest-exec-status")
    w = "guest-exec-status"
    exited = _opt_bool(obj, "exited", w)
    if exited is None:
        raise ReplyShapeError(f"{w}.exited: missing")
    return ExecStatus(
        exited=exited,
        exitcode=_opt_int(obj, "exitcode", w, lo=-(2**31), hi=2**31 - 1),
        signal=_opt_int(obj, "signal", w, lo=0, hi=255),
        stdout=_b64(obj, "out-data", w),
        stderr=_b64(obj, "err-data", w),
        stdout_truncated=_opt_bool(obj, "out-truncated", w) is True,
        stderr_truncated=_opt_bool(obj, "err-truncated", w) is True,
    )
