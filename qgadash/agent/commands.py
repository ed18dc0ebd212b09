"""Since which qemu-ga version each agent command exists, and what it tells the dashboard.

(What each command may do to a guest is `qgadash.agent.policy`.) The versions are the
`Since:` tags of QEMU's `qga/qapi-schema.json` (`qapi-schema-guest.json` before QEMU
1.4); they let qgadash know what an agent can do when it does not say (qemu-ga 1.0's
guest-info lists no commands) and tell people which era an agent belongs to and what
it cannot report.
"""

from __future__ import annotations

from collections.abc import Iterable

Version = tuple[int, ...]

# The first qemu-ga release with each command ("Since:" in the schema).
COMMAND_SINCE: dict[str, Version] = {
    "guest-sync": (0, 15),
    "guest-ping": (0, 15),
    "guest-info": (0, 15),
    "guest-shutdown": (0, 15),
    "guest-file-open": (0, 15),
    "guest-file-close": (0, 15),
    "guest-file-read": (0, 15),
    "guest-file-write": (0, 15),
    "guest-file-seek": (0, 15),
    "guest-file-flush": (0, 15),
    "guest-fsfreeze-status": (0, 15),
    "guest-fsfreeze-freeze": (0, 15),
    "guest-fsfreeze-thaw": (0, 15),
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
    "guest-network-get-route": (9, 1),
    "guest-get-load": (10, 0),
}

# Commands every agent answers, whatever its era or policy (the sync handshake and
# guest-info itself): never checked against what the agent offers.
ALWAYS_OFFERED = frozenset({"guest-sync", "guest-sync-delimited", "guest-ping", "guest-info"})

# What the dashboard shows from each polled command, for people ("cannot report ...").
FACTS: dict[str, str] = {
    "guest-get-osinfo": "OS",
    "guest-get-host-name": "host name",
    "guest-get-users": "users",
    "guest-get-timezone": "time zone",
    "guest-get-time": "clock drift",
    "guest-network-get-interfaces": "network interfaces",
    "guest-get-fsinfo": "filesystems and disk use",
    "guest-get-disks": "disks",
    "guest-get-load": "load",
    "guest-exec": "directory listings (guest-exec)",
    "guest-fsfreeze-freeze-list": "freezing single mount points",
}

# Era names: the newest release that added something a dashboard notices.
_ERAS: tuple[tuple[Version, str], ...] = (
    ((10, 0), "qemu-ga 10.x (2025-)"),
    ((7, 1), "qemu-ga 7.x-9.x (2022-2024)"),
    ((5, 2), "qemu-ga 5.2-7.0 (2020-2022)"),
    ((2, 10), "qemu-ga 2.10-5.1 (2017-2020)"),
    ((2, 5), "qemu-ga 2.5-2.9 (2015-2017)"),
    ((1, 1), "qemu-ga 1.1-2.4 (2012-2015)"),
    ((0, 0), "qemu-ga 0.15-1.0 (2011)"),
)


def parse_version(text: str) -> Version:
    """`"7.2.22"` -> (7, 2, 22); digits only, anything else in a part counts as 0."""
    parts: list[int] = []
    for piece in text.split(".")[:4]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits[:9]) if digits else 0)
    return tuple(parts)


def commands_of_version(version: Version) -> frozenset[str]:
    """The commands a Linux qemu-ga of `version` has (for agents that do not list theirs)."""
    return frozenset(name for name, since in COMMAND_SINCE.items() if version >= since)


def era_of(version_text: str) -> str:
    """`"2.5.0"` -> `"qemu-ga 2.5-2.9 (2015-2017)"`, for the Agent tab."""
    version = parse_version(version_text)
    for since, name in _ERAS:
        if version >= since:
            return name
    return _ERAS[-1][1]


def unreported(offered: Iterable[str]) -> tuple[str, ...]:
    """The facts an agent offering `offered` cannot give the dashboard, in table order."""
    have = set(offered)
    return tuple(fact for command, fact in FACTS.items() if command not in have)


def version_text(version: Version) -> str:
    return ".".join(str(part) for part in version)
