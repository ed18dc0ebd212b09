"""libvirt's own verbs for agent commands, and their output read back as agent replies.

Every raw `virsh qemu-agent-command` marks the domain tainted (`custom-ga-command` in
the domain's log), which operators' log pipelines look for. libvirt has verbs of its own
for most of what qgadash asks (`agent/policy.py`'s `libvirt_verb` names them): one
`guestinfo` call answers the host name, OS, users, time zone, filesystems, disks and
interfaces that a poll asks as seven agent commands; `domtime`, `domfsfreeze`,
`domfsthaw`, `set-user-password` and `shutdown --mode agent` do the rest. The replies
are turned back into the agent's own shapes, so everything above the transport reads
them with the same parsers (`agent/replies.py`) and the same rules: the output is the
guest's text, kept as plain strings, never evaluated.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from qgadash.agent.errors import AgentCommandError, AgentProtocolError

# guestinfo's flag for each command it answers (libvirt >= 5.7; --disk 7.0, --interface
# 8.10). Which flags this libvirt has is read from `virsh guestinfo --help` once.
GUESTINFO_FLAGS: dict[str, str] = {
    "guest-get-host-name": "--hostname",
    "guest-get-osinfo": "--os",
    "guest-get-users": "--user",
    "guest-get-timezone": "--timezone",
    "guest-get-fsinfo": "--filesystem",
    "guest-get-disks": "--disk",
    "guest-network-get-interfaces": "--interface",
}
# Answered from one `domtime` (the freeze state by inference, see `freeze_from_domtime`).
DOMTIME_COMMANDS = frozenset({"guest-get-time", "guest-fsfreeze-status"})
_LINE = re.compile(r"^([A-Za-z0-9_.-]+)\s*: ?(.*)$")
_COUNT = re.compile(r"^(?:Froze|Thawed) (\d+) filesystem")
_TIME = re.compile(r"^Time: (\d+)\s*$", re.MULTILINE)
_FS_DISK_KEYS = ("alias", "serial", "device")
_MAX_ITEMS = 4096  # a guest's "count" is its word: never trusted to size anything


def guestinfo_flags(help_text: str) -> frozenset[str]:
    """The report flags this virsh's guestinfo accepts (empty: no guestinfo at all)."""
    if "guestinfo" not in help_text or any(
        line.startswith("error:") for line in help_text.splitlines()
    ):
        return frozenset()
    return frozenset(f for f in set(GUESTINFO_FLAGS.values()) if f in help_text)


def parse_typed_params(output: str) -> dict[str, str]:
    """`key : value` lines as virsh prints typed parameters (values are guest text)."""
    params: dict[str, str] = {}
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if match:
            params.setdefault(match.group(1), match.group(2).strip())
    return params


def _count(params: dict[str, str], key: str) -> int:
    try:
        return max(0, min(_MAX_ITEMS, int(params.get(key, "0"))))
    except ValueError:
        raise AgentProtocolError(f"guestinfo: {key} is not a number") from None


def _present(params: dict[str, str], count_key: str, prefix: str, *fields: str) -> range:
    """Indexes 0.. of a list libvirt printed: up to its count, and only as far as entries
    with one of `fields` exist (a count is the guest's word, never a size)."""
    total = _count(params, count_key)
    for n in range(total):
        if not any(f"{prefix}{n}.{field}" in params for field in fields):
            return range(n)
    return range(total)


def _int(params: dict[str, str], key: str) -> int | None:
    text = params.get(key)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise AgentProtocolError(f"guestinfo: {key} is not a number") from None


def _missing(name: str) -> AgentCommandError:
    # libvirt leaves out what the agent does not support or has disabled (frozen).
    return AgentCommandError(
        "CommandNotFound", f"libvirt's guestinfo has no answer for {name} from this agent", name
    )


def guestinfo_reply(name: str, params: dict[str, str]) -> Any:
    """The agent-shaped reply to `name` from a guestinfo's parameters (AgentCommandError if
    libvirt had none)."""
    if name == "guest-get-host-name":
        if "hostname" not in params:
            raise _missing(name)
        return {"host-name": params["hostname"]}
    if name == "guest-get-osinfo":
        os_info = {k[3:]: v for k, v in params.items() if k.startswith("os.")}
        if not os_info:
            raise _missing(name)
        return os_info
    if name == "guest-get-timezone":
        if "timezone.offset" not in params:
            raise _missing(name)
        zone: dict[str, Any] = {"offset": _int(params, "timezone.offset")}
        if "timezone.name" in params:
            zone["zone"] = params["timezone.name"]
        return zone
    if name == "guest-get-users":
        if "user.count" not in params:
            raise _missing(name)
        users = []
        for i in _present(params, "user.count", "user.", "name"):
            user: dict[str, Any] = {"user": params.get(f"user.{i}.name", "")}
            if f"user.{i}.domain" in params:
                user["domain"] = params[f"user.{i}.domain"]
            login_ms = _int(params, f"user.{i}.login-time")
            if login_ms is not None:
                user["login-time"] = login_ms / 1000  # libvirt: ms; the agent: seconds
            users.append(user)
        return users
    if name == "guest-get-fsinfo":
        if "fs.count" not in params:
            raise _missing(name)
        filesystems = []
        for i in _present(params, "fs.count", "fs.", "name"):
            p = f"fs.{i}."
            fs: dict[str, Any] = {
                "name": params.get(p + "name", ""),
                "mountpoint": params.get(p + "mountpoint", ""),
                "type": params.get(p + "fstype", ""),
                "disk": [
                    {
                        k: params[f"{p}disk.{j}.{src}"]
                        for k, src in (("dev", "device"), ("serial", "serial"), ("alias", "alias"))
                        if f"{p}disk.{j}.{src}" in params
                    }
                    for j in _present(
                        params, p + "disk.count", p + "disk.", "alias", "serial", "device"
                    )
                ],
            }
            for key in ("total-bytes", "used-bytes"):
                value = _int(params, p + key)
                if value is not None:
                    fs[key] = value
            filesystems.append(fs)
        return filesystems
    if name == "guest-get-disks":
        if "disk.count" not in params:
            raise _missing(name)
        disks = []
        for i in _present(params, "disk.count", "disk.", "name"):
            p = f"disk.{i}."
            disk: dict[str, Any] = {
                "name": params.get(p + "name", ""),
                "partition": params.get(p + "partition", "no") in ("yes", "1", "true"),
                "dependencies": [
                    params.get(f"{p}dependency.{j}.name", "")
                    for j in _present(params, p + "dependency.count", p + "dependency.", "name")
                ],
            }
            if p + "guest_alias" in params:
                disk["alias"] = params[p + "guest_alias"]
            disks.append(disk)
        return disks
    if name == "guest-network-get-interfaces":
        if "if.count" not in params:
            raise _missing(name)
        interfaces = []
        for i in _present(params, "if.count", "if.", "name"):
            p = f"if.{i}."
            nic: dict[str, Any] = {"name": params.get(p + "name", "")}
            if p + "hwaddr" in params:
                nic["hardware-address"] = params[p + "hwaddr"]
            addresses = []
            for j in _present(params, p + "addr.count", p + "addr.", "addr"):
                q = f"{p}addr.{j}."
                addresses.append(
                    {
                        "ip-address-type": params.get(q + "type", ""),
                        "ip-address": params.get(q + "addr", ""),
                        "prefix": _int(params, q + "prefix"),
                    }
                )
            nic["ip-addresses"] = addresses
            interfaces.append(nic)
        return interfaces
    raise AgentCommandError("CommandNotFound", f"guestinfo does not answer {name}", name)


def domtime_seconds(output: str) -> int:
    """`Time: SECONDS` of `virsh domtime`."""
    match = _TIME.search(output)
    if match is None:
        raise AgentProtocolError(f"virsh domtime printed no time: {output.strip()[:200]!r}")
    return int(match.group(1))


def freeze_from_domtime(error: AgentCommandError | None) -> str:
    """guest-fsfreeze-status's answer from whether guest-get-time was allowed.

    qemu-ga disables every command but a handful (ping, info, sync, fsfreeze status and
    thaw) while the guest is frozen, guest-get-time among them, and says "has been
    disabled"; libvirt has no verb for the freeze status, so this is libvirt's way of
    asking without a taint. Any other refusal leaves the status unknown (an error).
    """
    if error is None:
        return "thawed"
    if error.disabled:
        return "frozen"
    raise AgentCommandError(
        error.error_class,
        f"freeze state unknown: guest-get-time was refused ({error.desc})",
        "guest-fsfreeze-status",
    )


def fs_count(output: str, command: str) -> int:
    """The number in `Froze N filesystem(s)` / `Thawed N filesystem(s)`."""
    for line in output.splitlines():
        match = _COUNT.match(line.strip())
        if match:
            return int(match.group(1))
    raise AgentProtocolError(f"virsh {command} printed no count: {output.strip()[:200]!r}")


def freeze_arguments(name: str, args: dict[str, Any] | None) -> list[str]:
    """`--mountpoint` arguments of guest-fsfreeze-freeze-list (none for a whole freeze)."""
    if name != "guest-fsfreeze-freeze-list":
        return []
    points = (args or {}).get("mountpoints")
    if points is None:
        return []
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise AgentCommandError("GenericError", "mountpoints must be a list of paths", name)
    return [arg for point in points for arg in ("--mountpoint", point)]


def set_time_arguments(args: dict[str, Any] | None) -> list[str]:
    """domtime's arguments for guest-set-time: a given time (whole seconds), else --sync."""
    value = (args or {}).get("time")
    if value is None:
        return ["--sync"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AgentCommandError("GenericError", "time must be nanoseconds", "guest-set-time")
    return ["--time", str(value // 1_000_000_000)]


def password_arguments(args: dict[str, Any] | None) -> list[str]:
    """set-user-password's arguments: the agent takes base64, virsh the password itself."""
    args = args or {}
    user, encoded = args.get("username"), args.get("password")
    if not isinstance(user, str) or not isinstance(encoded, str):
        raise AgentCommandError(
            "GenericError", "username and password are required", "guest-set-user-password"
        )
    try:
        password = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AgentCommandError(
            "GenericError", "password is not base64 of UTF-8 text", "guest-set-user-password"
        ) from None
    out = ["--user", user, "--password", password]
    if args.get("crypted"):
        out.append("--encrypted")
    return out


def guestinfo_groups(names: Sequence[str], flags: frozenset[str]) -> list[str]:
    """The guestinfo flags one call needs for `names` (in a stable order)."""
    return sorted({GUESTINFO_FLAGS[n] for n in names if GUESTINFO_FLAGS.get(n) in flags})
