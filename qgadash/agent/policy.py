"""What each agent command is allowed to do: one table, read by every layer.

The CLI asks it whether a command needs a confirmation, the engine whether read-only
mode allows it and whether a success reply comes, the audit log which arguments are
secret or bulky. A command not in the table (a newer agent's, a typo) is treated as the
most dangerous kind: it changes the guest, needs a confirmation, is refused read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    changes_guest: bool  # refused in read-only mode, confirmed before it runs
    no_reply: bool = False  # success-response false: nothing comes back on success
    freeze: bool = False  # a freeze: goes through the freeze guard (deadline, keepers)
    secret: frozenset[str] = frozenset()  # argument keys masked in the audit log
    bulky: frozenset[str] = frozenset()  # argument keys logged as their length
    # libvirt's own verb for it (virsh), if any: libvirt guests get that instead of a raw
    # `qemu-agent-command`, which marks the domain tainted (custom-ga-command).
    libvirt_verb: str | None = None

    @property
    def read_only_allowed(self) -> bool:
        return not self.changes_guest


_READ = CommandPolicy(changes_guest=False)
_CHANGE = CommandPolicy(changes_guest=True)
UNKNOWN = _CHANGE

POLICIES: dict[str, CommandPolicy] = {
    **{
        name: _READ
        for name in (
            "guest-ping",
            "guest-info",
            "guest-sync",
            "guest-sync-delimited",
            "guest-get-osinfo",
            "guest-get-host-name",
            "guest-get-users",
            "guest-get-timezone",
            "guest-get-time",
            "guest-get-fsinfo",
            "guest-get-disks",
            "guest-network-get-interfaces",
            "guest-network-get-route",
            "guest-get-vcpus",
            "guest-get-cpustats",
            "guest-get-diskstats",
            "guest-get-load",
            "guest-fsfreeze-status",
            "guest-get-memory-blocks",
            "guest-get-memory-block-info",
            "guest-get-devices",
            "guest-ssh-get-authorized-keys",
            "guest-exec-status",
        )
    },
    "guest-fsfreeze-freeze": CommandPolicy(changes_guest=True, freeze=True),
    "guest-fsfreeze-freeze-list": CommandPolicy(changes_guest=True, freeze=True),
    "guest-fsfreeze-thaw": _CHANGE,
    "guest-fstrim": _CHANGE,
    "guest-shutdown": CommandPolicy(changes_guest=True, no_reply=True),
    "guest-suspend-ram": CommandPolicy(changes_guest=True, no_reply=True),
    "guest-suspend-disk": CommandPolicy(changes_guest=True, no_reply=True),
    "guest-suspend-hybrid": CommandPolicy(changes_guest=True, no_reply=True),
    "guest-set-time": _CHANGE,
    "guest-set-vcpus": _CHANGE,
    "guest-set-memory-blocks": _CHANGE,
    "guest-set-user-password": CommandPolicy(
        changes_guest=True, secret=frozenset({"password", "crypted"})
    ),
    "guest-ssh-add-authorized-keys": _CHANGE,
    "guest-ssh-remove-authorized-keys": _CHANGE,
    "guest-exec": CommandPolicy(
        changes_guest=True, secret=frozenset({"arg", "env"}), bulky=frozenset({"input-data"})
    ),
    # Opening for reading is harmless; the mode decides (see `file_open_changes_guest`).
    "guest-file-open": _CHANGE,
    "guest-file-read": _READ,
    "guest-file-seek": _READ,
    "guest-file-close": _READ,
    "guest-file-flush": _CHANGE,
    "guest-file-write": CommandPolicy(changes_guest=True, bulky=frozenset({"buf-b64"})),
}

# libvirt's verbs (filled into the table here, so the entries above stay one per line).
# guest-ping and guest-fsfreeze-status have no verb of their own: the cheapest agent call
# libvirt makes stands in (an answer is a pong; guest-get-time refused as "disabled" is
# a frozen guest, since the agent disables it while frozen). No verb at all: guest-info,
# guest-exec, the file and ssh-key commands, vCPUs, memory blocks, fstrim.
LIBVIRT_VERBS: dict[str, str] = {
    "guest-ping": "domtime",
    "guest-get-osinfo": "guestinfo --os",
    "guest-get-host-name": "guestinfo --hostname",
    "guest-get-users": "guestinfo --user",
    "guest-get-timezone": "guestinfo --timezone",
    "guest-get-fsinfo": "guestinfo --filesystem",
    "guest-get-disks": "guestinfo --disk",
    "guest-network-get-interfaces": "guestinfo --interface",
    "guest-get-time": "domtime",
    "guest-fsfreeze-status": "domtime",
    "guest-fsfreeze-freeze": "domfsfreeze",
    "guest-fsfreeze-freeze-list": "domfsfreeze --mountpoint",
    "guest-fsfreeze-thaw": "domfsthaw",
    "guest-set-time": "domtime --time/--sync",
    "guest-set-user-password": "set-user-password",
    "guest-shutdown": "shutdown/reboot --mode agent",
    "guest-suspend-ram": "dompmsuspend --target mem",
    "guest-suspend-disk": "dompmsuspend --target disk",
    "guest-suspend-hybrid": "dompmsuspend --target hybrid",
}
POLICIES.update(
    (name, replace(POLICIES[name], libvirt_verb=verb)) for name, verb in LIBVIRT_VERBS.items()
)

NO_REPLY_COMMANDS = frozenset(n for n, p in POLICIES.items() if p.no_reply)
SECRET_KEYS = frozenset(k for p in POLICIES.values() for k in p.secret) | {"passwd", "secret"}
BULKY_KEYS = frozenset(k for p in POLICIES.values() for k in p.bulky)


def command_policy(name: str) -> CommandPolicy:
    return POLICIES.get(name, UNKNOWN)


def libvirt_verb(name: str) -> str | None:
    """libvirt's own verb for `name`, None if only `qemu-agent-command` (a taint) can send it."""
    return command_policy(name).libvirt_verb


def changes_guest(name: str, arguments: dict[str, object] | None = None) -> bool:
    """Whether running `name` with `arguments` may change the guest."""
    if name == "guest-file-open":
        mode = (arguments or {}).get("mode", "r")
        return mode not in ("r", "rb")
    return command_policy(name).changes_guest
