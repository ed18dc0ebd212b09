"""The JSON documents of `--json` (contracts.md): fields the guest did not report are null."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from qgadash.fleet.loadavg import FROM_AGENT, StatusLoad
from qgadash.fleet.model import ActionResult, HypervisorStatus, VmSnapshot


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def vm_document(
    snap: VmSnapshot, note: str | None = None, load: StatusLoad | None = None
) -> dict[str, Any]:
    """`load`: the VM's load as `status` found it (with its source, or why none); without
    it, the poll's."""
    facts = snap.facts
    if load is None:
        load = StatusLoad(facts.load, FROM_AGENT if facts.load else None, None)
    os_doc = None
    if facts.os is not None:
        os_doc = {
            "id": facts.os.id,
            "name": facts.os.name,
            "pretty_name": facts.os.pretty_name,
            "version": facts.os.version,
            "kernel": facts.os.kernel_release,
            "machine": facts.os.machine,
        }
    interfaces = None
    if facts.interfaces is not None:
        interfaces = [
            {
                "name": i.name,
                "mac": i.mac,
                "addresses": [
                    {"address": a.address, "prefix": a.prefix, "family": a.family}
                    for a in i.addresses
                ],
                "rx_bytes": i.stats.rx_bytes if i.stats else None,
                "tx_bytes": i.stats.tx_bytes if i.stats else None,
            }
            for i in facts.interfaces
        ]
    filesystems = None
    if facts.filesystems is not None:
        filesystems = [
            {
                "mountpoint": f.mountpoint,
                "type": f.type,
                "device": f.name,
                "used_bytes": f.used_bytes,
                "total_bytes": f.total_bytes,
            }
            for f in facts.filesystems
        ]
    users = None
    if facts.users is not None:
        users = [
            {"name": u.name, "domain": u.domain, "login_time": iso(u.login_time)}
            for u in facts.users
        ]
    disks = None
    if facts.disks is not None:
        disks = [
            {
                "name": d.name,
                "partition": d.partition,
                "alias": d.alias,
                "dependencies": list(d.dependencies),
            }
            for d in facts.disks
        ]
    commands = None
    if facts.info is not None:
        commands = [c.name for c in facts.info.commands if c.enabled]
    return {
        "id": snap.id,
        "hypervisor": snap.ref.hypervisor,
        "name": snap.ref.name,
        "tags": list(snap.ref.tags),
        "agent": {
            "state": snap.agent.value,
            "version": facts.version,
            "latency_ms": round(snap.latency_ms, 3) if snap.latency_ms is not None else None,
            "error": snap.error,
            "commands": commands,
            # What the channel says: an old agent's adaptation, a libvirt taint.
            "note": note,
            # A power action this process sent (stopped, suspended, rebooting): which, when.
            "action": snap.lifecycle.action if snap.lifecycle else None,
            "since": iso(snap.lifecycle.since) if snap.lifecycle else None,
        },
        "hostname": facts.hostname,
        "os": os_doc,
        "fsfreeze": snap.freeze.value if snap.freeze.value != "unknown" else None,
        "thaw_deadline": iso(snap.thaw_deadline),
        "thaw_error": snap.thaw_error,
        "interfaces": interfaces,
        "filesystems": filesystems,
        "disks": disks,
        "users": users,
        "load": (
            {
                "load1": load.load.load1,
                "load5": load.load.load5,
                "load15": load.load.load15,
                "source": load.source,
            }
            if load.load
            else None
        ),
        "load_note": load.note,
        "timezone": facts.timezone.zone if facts.timezone else None,
        "time_drift_s": round(facts.time_drift_s, 3) if facts.time_drift_s is not None else None,
        "last_seen": iso(snap.last_seen),
    }


def hypervisor_document(status: HypervisorStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": status.state.value,
        "error": status.error,
        "vms": status.vm_count,
    }


def status_document(
    snapshots: Iterable[VmSnapshot],
    hypervisors: Iterable[HypervisorStatus],
    notes: Mapping[str, str] | None = None,
    loads: Mapping[str, StatusLoad] | None = None,
) -> dict[str, Any]:
    notes = notes or {}
    loads = loads or {}
    return {
        "vms": [vm_document(s, notes.get(s.id), loads.get(s.id)) for s in snapshots],
        "hypervisors": [hypervisor_document(h) for h in hypervisors],
    }


def action_document(action: str, results: Iterable[ActionResult]) -> dict[str, Any]:
    return {
        "action": action,
        "results": [
            {
                "id": r.vm_id,
                "ok": r.ok,
                "value": r.value,
                "error": r.error,
                "elapsed_ms": round(r.elapsed_ms, 1),
            }
            for r in results
        ],
    }
