"""The schema the simulated qemu-ga answers to: which commands each release has
(the `Since:` tags), how each era words things (`Era`), the argument schemas checked as
QEMU's input visitor does, and the error every command raises (`CommandError`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

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


def supported_commands(version: tuple[int, ...], windows: bool) -> tuple[str, ...]:
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
class Era:
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
    def of(cls, v: tuple[int, ...]) -> Era:
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


NO_SUCCESS_RESPONSE = frozenset(
    {"guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid"}
)
FROZEN_ALLOWED = frozenset(
    {
        "guest-ping",
        "guest-info",
        "guest-sync",
        "guest-sync-delimited",
        "guest-fsfreeze-status",
        "guest-fsfreeze-thaw",
    }
)
LINUX_UNSUPPORTED = frozenset({"guest-get-devices"})
# SLOW: every reply this late. A default poll pipelines up to 11 requests, so a poll
# takes 1-2.5 s: far slower than a healthy agent, still inside the 3 s timeout (an agent
# that is slow but working, which the dashboard shows by its round-trip time).
SLOW_REPLY_DELAY = 0.2
SYNC_COMMANDS = frozenset({"guest-sync", "guest-sync-delimited", "guest-ping"})

# Argument schemas: (name, type, required), in the order QEMU's visitor checks them.
_Schema = tuple[tuple[str, str, bool], ...]
SCHEMAS: dict[str, _Schema] = {
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


class CommandError(Exception):
    """A command failed: the agent answers `{"error": {"class": ..., "desc": ...}}`."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


# A handler's value meaning: send no reply (success-response: false).
NO_REPLY = object()


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("Base64 data contains invalid characters") from None


def is_int(value: object, unsigned: bool = False) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return _INT64[0] <= value < (1 << 64 if unsigned else _INT64[1])


def _type_ok(kind: str, value: object, name: str, era: Era | None = None) -> bool:
    modern = era is not None and era.capture_modes
    if kind == "int":
        return is_int(value)
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
        return is_int(value)
    if kind == "capture":  # a bool; since 8.0 also a GuestExecCaptureOutputMode
        if modern and isinstance(value, str):
            if value not in ("none", "stdout", "stderr", "separated", "merged"):
                raise CommandError(f"Parameter '{name}' does not accept value '{value}'")
            return True
        return isinstance(value, bool)
    raise AssertionError(kind)


def check_args(
    schema: _Schema, args: dict[str, object], era: Era | None = None
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
