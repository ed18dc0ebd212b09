"""Naming agents found by glob: the VM name hidden in each hypervisor's socket layout."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_LIBVIRT_DIR = re.compile(r"^domain-\d+-(?P<name>.+)$")
_PROXMOX = re.compile(r"^(?P<vmid>\d+)\.qga$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def vm_name_for_socket(path: str) -> str:
    """libvirt `domain-<id>-<name>/org.qemu.guest_agent.0`, Proxmox `<vmid>.qga`, else the stem."""
    p = PurePosixPath(path)
    if p.name.startswith("org.qemu.guest_agent"):
        match = _LIBVIRT_DIR.match(p.parent.name)
        if match:
            return _clean(match.group("name"))
    match = _PROXMOX.match(p.name)
    if match:
        return match.group("vmid")
    return _clean(p.stem if p.suffix else p.name)


def is_proxmox_socket(path: str) -> bool:
    """Proxmox opens these per command; we must never hold them (protocol.md)."""
    return bool(_PROXMOX.match(PurePosixPath(path).name))


def _clean(name: str) -> str:
    cleaned = _SAFE.sub("_", name)[:63]
    return cleaned or "_"
