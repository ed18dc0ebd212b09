"""The transport a [[hypervisor]] table asks for: one place that builds links.

The engine builds its links here, and so do the keeper and a later start that settle a
hold journal written by another process (from the `Reach` stored in each record).
"""

from __future__ import annotations

from qgadash.fleet.config import HypervisorConfig, Settings
from qgadash.transport.base import HypervisorLink
from qgadash.transport.local import LocalHypervisor


def make_link(hv: HypervisorConfig, settings: Settings) -> HypervisorLink:
    """The transport a [[hypervisor]] table asks for."""
    if hv.via != "libvirt" and hv.ssh is None:
        return LocalHypervisor(hv.name, settings.max_reply_bytes)
    from qgadash.transport.libvirt import DEFAULT_URI, LibvirtHypervisor
    from qgadash.transport.proxmox import DEFAULT_CONFIG_DIR as PROXMOX_CONFIGS
    from qgadash.transport.ssh import SshHypervisor, SshTarget

    target = SshTarget(hv.ssh, hv.identity, hv.known_hosts, hv.jump) if hv.ssh else None
    if hv.via == "libvirt":
        return LibvirtHypervisor(
            hv.name,
            target,
            uri=hv.uri or DEFAULT_URI,
            max_reply=settings.max_reply_bytes,
            connect_timeout=hv.connect_timeout,
            keepalive_interval=hv.keepalive_interval,
            keepalive_count_max=hv.keepalive_count_max,
        )
    assert target is not None
    return SshHypervisor(
        hv.name,
        target,
        via=hv.via,
        proxmox_configs=hv.proxmox_configs or PROXMOX_CONFIGS,
        max_reply=settings.max_reply_bytes,
        connect_timeout=hv.connect_timeout,
        keepalive_interval=hv.keepalive_interval,
        keepalive_count_max=hv.keepalive_count_max,
    )
