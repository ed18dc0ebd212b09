"""Proxmox guests as Proxmox sees them: names, agent settings and running state.

Proxmox opens `/var/run/qemu-server/<vmid>.qga` per command, so the socket says only the
vmid; every Proxmox operator knows a guest by the `name:` in
`/etc/pve/qemu-server/<vmid>.conf`. One shell command over the hypervisor's SSH
connection prints every config there (capped) with whether its QEMU runs (the pidfile
`<vmid>.pid` beside the socket names a live process: what `qm status` reads, without
its ~0.5 s of Perl per guest). The configs are read here:

- `key: value` lines; `#` lines are the guest's description (notes), not settings;
- the guest's own settings end at the first `[section]` (`[snapshot-name]`, `[PENDING]`,
  `[special:cloudinit]`): a snapshot's `name:` is not the guest's;
- `agent:` is a property string, `1`, `0`, `1,fstrim_cloned_disks=1`, `enabled=0,type=isa`
  (the first bare value is `enabled`); no `agent:` line means disabled.

The file is the hypervisor's and may say anything: a name is plain text, cut to what
Proxmox itself allows in a name (DNS-name characters, 63 long) for the VM's id, and the
whole reply is capped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_CONFIG_DIR = "/etc/pve/qemu-server"
MAX_CONFIG_BYTES = 64 * 1024  # per guest: real configs are a few kB
MAX_GUESTS = 10_000
_VMID = re.compile(r"^(?P<vmid>\d{1,9})\.qga$")
_SECTION = re.compile(r"^\[[^\]]*\]\s*$")
_KEY = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_-]*):\s*(?P<value>.*)$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_TRUE = frozenset({"1", "on", "yes", "true"})


@dataclass(frozen=True, slots=True)
class PveGuest:
    """What one `<vmid>.conf` (and its pidfile) says about a guest."""

    vmid: str
    name: str | None  # as Proxmox shows it, cleaned; None if the config has none
    agent_enabled: bool
    agent_setting: str | None  # the `agent:` value as written, for messages
    running: bool | None = None  # None: not known (no pidfile answer)

    @property
    def title(self) -> str:
        """The VM's name in qgadash: `db-primary (101)`, or the vmid alone."""
        return f"{self.name} ({self.vmid})" if self.name else self.vmid


def vmid_of_socket(path: str) -> str | None:
    """The vmid of a Proxmox agent socket path (`.../<vmid>.qga`), else None."""
    match = _VMID.match(PurePosixPath(path).name)
    return match.group("vmid") if match else None


def clean_name(text: str) -> str | None:
    """A name from a config as plain, safe text (Proxmox allows a DNS name, 63 long)."""
    cleaned = _NAME_UNSAFE.sub("_", text.strip())[:63].strip("_")
    return cleaned or None


def agent_enabled(value: str | None) -> bool:
    """Whether an `agent:` property string turns the agent on (absent: off)."""
    if value is None:
        return False
    for i, part in enumerate(value.split(",")):
        key, eq, setting = part.strip().partition("=")
        if not eq and i == 0:
            return key.strip().lower() in _TRUE
        if eq and key.strip() == "enabled":
            return setting.strip().lower() in _TRUE
    return False


def parse_config(vmid: str, text: str) -> PveGuest:
    """The guest's own settings from a `<vmid>.conf` (see the module's notes)."""
    settings: dict[str, str] = {}
    for raw in text[:MAX_CONFIG_BYTES].splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _SECTION.match(line):
            break  # snapshots, pending changes, cloud-init: not the guest's current settings
        match = _KEY.match(line)
        if match:
            settings.setdefault(match.group("key"), match.group("value").strip())
    name = settings.get("name")
    agent = settings.get("agent")
    return PveGuest(vmid, clean_name(name) if name else None, agent_enabled(agent), agent)


def configs_script(config_dir: str, run_dir: str) -> str:
    """Shell text printing, per `<vmid>.conf`: vmid NUL running NUL config NUL.

    `running` is 1 when `<run_dir>/<vmid>.pid` names a live process, 0 when it does not,
    `?` when the pidfile cannot be read. Nothing from a config is run or expanded.
    """
    conf = shlex.quote(config_dir.rstrip("/") or "/")
    run = shlex.quote(run_dir.rstrip("/") or "/")
    return (
        f'for f in {conf}/*.conf; do [ -f "$f" ] || continue; '
        'v=${f##*/}; v=${v%.conf}; case $v in *[!0-9]*|"") continue;; esac; '
        f'p={run}/$v.pid; r=0; if [ -e "$p" ]; then '
        'if [ -r "$p" ]; then pid=; read -r pid < "$p" 2>/dev/null; '
        'case $pid in ""|*[!0-9]*) r=0;; *) [ -d /proc/$pid ] && r=1;; esac; else r="?"; fi; fi; '
        "printf '%s\\000%s\\000' \"$v\" \"$r\"; "
        f"head -c {MAX_CONFIG_BYTES} \"$f\" | tr -d '\\000'; "
        "printf '\\000'; done; exit 0"
    )


def parse_configs_output(output: bytes) -> dict[str, PveGuest]:
    """`configs_script`'s output: vmid -> guest (at most MAX_GUESTS)."""
    fields = output.split(b"\0")
    guests: dict[str, PveGuest] = {}
    for i in range(0, len(fields) - 3, 3):  # a record ends with its NUL: no partial tail
        vmid = fields[i].decode("ascii", "replace")
        if not vmid.isdigit() or len(vmid) > 9 or len(guests) >= MAX_GUESTS:
            continue
        state = fields[i + 1]
        guest = parse_config(vmid, fields[i + 2].decode("utf-8", "replace"))
        running = True if state == b"1" else False if state == b"0" else None
        guests[vmid] = PveGuest(
            guest.vmid, guest.name, guest.agent_enabled, guest.agent_setting, running
        )
    return guests


def disabled_message(hypervisor: str, guest: PveGuest, config_dir: str) -> str:
    setting = f"agent: {guest.agent_setting}" if guest.agent_setting else "no agent: line"
    return (
        f"{hypervisor}/{guest.title}: the QEMU guest agent is disabled in "
        f"{config_dir.rstrip('/')}/{guest.vmid}.conf ({setting}); enable it there "
        "(Options > QEMU Guest Agent) and restart the guest"
    )
