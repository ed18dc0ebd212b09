"""The fleet as Prometheus text: one sample per fact, labelled by `vm` and `hypervisor`.

At 10,000 VMs a scrape is ~200,000 samples. prometheus-client's metric objects cost
several microseconds a sample, so the per-VM families are written here directly in the
exposition format (the library still serves the exporter's own metrics, and the tests
parse this text with its parsers). Snapshots are immutable and replaced whole: each VM's
lines are rendered when the store says its snapshot was replaced, and kept; its
filesystem and identity lines are kept by the identity of the facts they came from,
which polls reuse while the guest's reply is unchanged. A scrape only joins the kept
lines (`FleetExposition.text`), in whatever thread serves it.

Everything a guest says is untrusted: label values go through `printable` (control,
bidi and invisible characters escaped, length cut) and are then escaped for the format.
Cardinality is bounded: at most `MAX_INTERFACES` interfaces and `MAX_FILESYSTEMS` mount
points per VM, in the order the guest reported them, each label value at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from qgadash.agent.replies import Filesystem, FreezeState, Interface
from qgadash.fleet.model import AgentState, GuestFacts, HypervisorStatus, VmRef, VmSnapshot
from qgadash.fleet.sanitize import printable

__all__ = [
    "MAX_FILESYSTEMS",
    "MAX_INTERFACES",
    "VM_FAMILIES",
    "Family",
    "FleetExposition",
    "label_value",
]

MAX_INTERFACES = 16  # per VM: a guest cannot grow the exporter's series with endless NICs
MAX_FILESYSTEMS = 32  # per VM: nor with endless bind mounts
LABEL_LIMITS = {
    "vm": 200,
    "hypervisor": 100,
    "mountpoint": 160,
    "fstype": 32,
    "interface": 64,
    "os": 80,
    "hostname": 128,
    "agent_version": 32,
}


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # for counters, without `_total` (OpenMetrics names the family so)
    kind: str  # "gauge" | "counter"
    help: str

    def header(self, openmetrics: bool) -> str:
        name = self.name if openmetrics or self.kind != "counter" else self.name + "_total"
        return f"# HELP {name} {self.help}\n# TYPE {name} {self.kind}\n"


# The per-VM families, in the order each VM's fragments are kept.
UP, STATE, RTT, FROZEN, FS_USED, FS_SIZE, RX, TX, LOAD1, DRIFT, INFO, SEEN = range(12)
VM_FAMILIES: tuple[Family, ...] = (
    Family("qgadash_agent_up", "gauge", "1 if the VM's agent answered its last poll, else 0."),
    Family(
        "qgadash_agent_state",
        "gauge",
        "1 for the state the last poll found (ok, timeout, unreachable, error, pending, or "
        "stopped, suspended, rebooting after a power action qgadash sent).",
    ),
    Family("qgadash_agent_rtt_seconds", "gauge", "Round trip of the VM's last poll."),
    Family(
        "qgadash_fsfreeze_frozen",
        "gauge",
        "1 if the guest's filesystems are frozen, 0 if thawed (absent while unknown).",
    ),
    Family("qgadash_filesystem_used_bytes", "gauge", "Bytes used on a guest filesystem."),
    Family("qgadash_filesystem_size_bytes", "gauge", "Size of a guest filesystem in bytes."),
    Family("qgadash_network_receive_bytes", "counter", "Bytes a guest interface received."),
    Family("qgadash_network_transmit_bytes", "counter", "Bytes a guest interface transmitted."),
    Family("qgadash_load1", "gauge", "The guest's 1-minute load average."),
    Family("qgadash_time_drift_seconds", "gauge", "The guest's clock minus the exporter's."),
    Family(
        "qgadash_guest_info",
        "gauge",
        "1, labelled with what the guest says it is (os, hostname, agent_version).",
    ),
    Family(
        "qgadash_agent_last_seen_timestamp_seconds",
        "gauge",
        "When the VM's agent last answered a poll (Unix time).",
    ),
)
HYPERVISOR_FAMILIES: tuple[Family, ...] = (
    Family(
        "qgadash_hypervisor_up",
        "gauge",
        "1 if the hypervisor is reachable (local, or its SSH connection is up), else 0.",
    ),
    Family("qgadash_hypervisor_vms", "gauge", "VMs found on the hypervisor."),
)
_UP_STATES = frozenset({"local", "connected"})  # HypervisorState values (contracts.md)

Fragments = tuple[str, ...]


def label_value(text: str | None, limit: int) -> str:
    """Guest (or operator) text made safe as a label value: unsafe characters shown as
    escapes, cut to `limit`, then escaped for the exposition format."""
    value = printable(text, limit)
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return value


def _number(value: float) -> str:
    return repr(float(value))


class _VmText:
    """One VM's text as of its last render, and the pieces it was made from.

    A poll replaces the snapshot, but most of what it says is as before: lines whose
    input is unchanged are kept, and lines whose value changes on every poll (round
    trip, load, drift, last seen) keep everything up to the value.
    """

    __slots__ = (
        "agent",
        "filesystems",
        "freeze",
        "fs_text",
        "info_facts",
        "info_line",
        "labels",
        "lines",
        "nic_names",
        "nic_prefixes",
        "prefixes",
        "ref",
        "snap",
    )

    def __init__(self) -> None:
        self.snap: VmSnapshot | None = None
        self.lines: Fragments = ("",) * len(VM_FAMILIES)
        self.ref: VmRef | None = None
        self.labels = ""
        self.prefixes: dict[int, str] = {}
        self.agent: AgentState | None = None
        self.freeze: FreezeState | None = None
        self.filesystems: tuple[Filesystem, ...] | None = None
        self.fs_text = ("", "")
        self.info_facts: GuestFacts | None = None
        self.info_line = ""
        self.nic_names: tuple[str, ...] = ()
        self.nic_prefixes: tuple[tuple[str, str] | None, ...] = ()

    def update(self, vm_id: str, snap: VmSnapshot) -> None:
        self.snap = snap
        ref = snap.ref
        if ref is not self.ref:
            self.ref = ref
            self.labels = (
                f'vm="{label_value(vm_id, LABEL_LIMITS["vm"])}",'
                f'hypervisor="{label_value(ref.hypervisor, LABEL_LIMITS["hypervisor"])}"'
            )
            self.prefixes = {
                i: f"{VM_FAMILIES[i].name}{{{self.labels}}} " for i in (RTT, LOAD1, DRIFT, SEEN)
            }
            self.nic_names = ()  # every kept line holds the old labels
            self.agent = self.freeze = self.filesystems = self.info_facts = None
        labels = self.labels
        prefixes = self.prefixes
        old = self.lines
        agent = snap.agent
        ok = agent is AgentState.OK
        facts = snap.facts
        frags = [""] * len(VM_FAMILIES)
        if agent is self.agent:
            frags[UP], frags[STATE] = old[UP], old[STATE]
        else:
            self.agent = agent
            if agent is not AgentState.PENDING:
                frags[UP] = f"qgadash_agent_up{{{labels}}} {1 if ok else 0}\n"
            frags[STATE] = f'qgadash_agent_state{{{labels},state="{agent.value}"}} 1\n'
        if ok and snap.latency_ms is not None:
            frags[RTT] = f"{prefixes[RTT]}{snap.latency_ms / 1000:.6f}\n"
        if snap.freeze is self.freeze:
            frags[FROZEN] = old[FROZEN]
        else:
            self.freeze = snap.freeze
            if snap.freeze is not FreezeState.UNKNOWN:
                frozen = 1 if snap.freeze is FreezeState.FROZEN else 0
                frags[FROZEN] = f"qgadash_fsfreeze_frozen{{{labels}}} {frozen}\n"
        if ok:
            if facts.filesystems:
                if facts.filesystems is not self.filesystems:
                    self.filesystems = facts.filesystems
                    self.fs_text = _filesystem_lines(labels, facts.filesystems)
                frags[FS_USED], frags[FS_SIZE] = self.fs_text
            if facts.interfaces:
                frags[RX], frags[TX] = self._interface_lines(facts.interfaces)
            if facts.load is not None:
                frags[LOAD1] = f"{prefixes[LOAD1]}{_number(facts.load.load1)}\n"
            if facts.time_drift_s is not None:
                frags[DRIFT] = f"{prefixes[DRIFT]}{facts.time_drift_s:.6f}\n"
        if facts.info is not None or facts.os is not None or facts.hostname is not None:
            if self.info_facts is None or not _same_identity(self.info_facts, facts):
                self.info_facts = facts
                self.info_line = _info_line(labels, facts)
            frags[INFO] = self.info_line
        if snap.last_seen is not None:
            frags[SEEN] = f"{prefixes[SEEN]}{snap.last_seen:.3f}\n"
        self.lines = tuple(frags)

    def _interface_lines(self, interfaces: tuple[Interface, ...]) -> tuple[str, str]:
        """Counters change every poll, names seldom: the line up to the value is kept."""
        names = tuple([iface.name for iface in interfaces])
        if names != self.nic_names:
            self.nic_names = names
            self.nic_prefixes = _interface_prefixes(self.labels, names)
        rx: list[str] = []
        tx: list[str] = []
        for iface, prefixes in zip(interfaces, self.nic_prefixes, strict=True):
            stats = iface.stats
            if prefixes is None or stats is None:
                continue
            rx.append(f"{prefixes[0]}{stats.rx_bytes}\n")
            tx.append(f"{prefixes[1]}{stats.tx_bytes}\n")
        return "".join(rx), "".join(tx)


class FleetExposition:
    """Each VM's text, kept current from the store's changes; the whole text on demand.

    The event loop writes (`update`, `remove`, `set_hypervisors`: one VM's lines are
    re-rendered when its snapshot is replaced); any thread reads (`text`). A reader takes
    a copy of the VM table and each VM's lines tuple, both replaced whole, never edited
    in place, so it sees every VM as of one of its snapshots without a lock, and needs
    no turn of the loop. `generation` counts the writes, so a reader can tell whether a
    text it built is still current.
    """

    def __init__(self) -> None:
        self._vms: dict[str, _VmText] = {}
        self._hypervisor_text = ""
        self.generation = 0

    def __contains__(self, vm_id: str) -> bool:
        return vm_id in self._vms

    def add(self, vm_ids: Iterable[str]) -> None:
        """Places for new VMs, in this order (the store's), before their first `update`:
        a scrape lists VMs as the store does, whatever order their changes come in."""
        for vm_id in vm_ids:
            if vm_id not in self._vms:
                self._vms[vm_id] = _VmText()

    def update(self, vm_id: str, snap: VmSnapshot) -> None:
        """The VM's snapshot now (a VM without a place is added at the end)."""
        entry = self._vms.get(vm_id)
        if entry is None:
            entry = _VmText()
        elif entry.snap is snap:
            return
        entry.update(vm_id, snap)
        self._vms[vm_id] = entry
        self.generation += 1

    def remove(self, vm_id: str) -> None:
        if self._vms.pop(vm_id, None) is not None:
            self.generation += 1

    def set_hypervisors(self, hypervisors: Iterable[HypervisorStatus]) -> None:
        self._hypervisor_text = _hypervisor_text(hypervisors)
        self.generation += 1

    def text(self, openmetrics: bool) -> str:
        """The per-VM and per-hypervisor families (no `# EOF`: the caller ends the text).
        Safe from any thread while the loop writes."""
        entries = list(self._vms.values())  # one C call: atomic under the interpreter lock
        hypervisors = self._hypervisor_text
        all_fragments: list[Fragments] = []
        used_labels: set[str] = set()
        for entry in entries:
            lines = entry.lines  # read before labels: a renamed VM's old lines go unseen
            labels = entry.labels
            if not labels:
                continue  # a place added, not rendered yet
            if labels in used_labels:
                continue  # two ids equal once cut: a duplicate series would fail the scrape
            used_labels.add(labels)
            all_fragments.append(lines)
        parts: list[str] = []
        for index, family in enumerate(VM_FAMILIES):
            parts.append(family.header(openmetrics))
            parts.append("".join(map(itemgetter(index), all_fragments)))
        parts.append(hypervisors)
        return "".join(parts)

    def render(
        self,
        snapshots: Sequence[VmSnapshot],
        hypervisors: Iterable[HypervisorStatus],
        openmetrics: bool,
    ) -> str:
        """`snapshots` as the whole fleet: VMs not among them leave, the others are
        updated, then the text (what the loop and `text` do, in one call)."""
        current = {snap.ref.hypervisor + "/" + snap.ref.name: snap for snap in snapshots}
        for vm_id in [vm_id for vm_id in self._vms if vm_id not in current]:
            self.remove(vm_id)
        for vm_id, snap in current.items():
            self.update(vm_id, snap)
        self.set_hypervisors(hypervisors)
        return self.text(openmetrics)


def _hypervisor_text(hypervisors: Iterable[HypervisorStatus]) -> str:
    """Both families are gauges: their text is the same in either format."""
    up_family, vms_family = HYPERVISOR_FAMILIES
    up = [up_family.header(openmetrics=True)]
    vms = [vms_family.header(openmetrics=True)]
    seen: set[str] = set()
    for hv in hypervisors:
        name = label_value(hv.name, LABEL_LIMITS["hypervisor"])
        if name in seen:
            continue
        seen.add(name)
        state = 1 if hv.state.value in _UP_STATES else 0
        up.append(f'qgadash_hypervisor_up{{hypervisor="{name}"}} {state}\n')
        vms.append(f'qgadash_hypervisor_vms{{hypervisor="{name}"}} {hv.vm_count}\n')
    return "".join(up) + "".join(vms)


def _same_identity(kept: GuestFacts, facts: GuestFacts) -> bool:
    return kept.info is facts.info and kept.os is facts.os and kept.hostname == facts.hostname


def _info_line(labels: str, facts: GuestFacts) -> str:
    os_label = label_value(facts.os_label, LABEL_LIMITS["os"])
    hostname = label_value(facts.hostname, LABEL_LIMITS["hostname"])
    version = label_value(facts.version, LABEL_LIMITS["agent_version"])
    return (
        f'qgadash_guest_info{{{labels},os="{os_label}",hostname="{hostname}",'
        f'agent_version="{version}"}} 1\n'
    )


def _filesystem_lines(labels: str, filesystems: tuple[Filesystem, ...]) -> tuple[str, str]:
    used: list[str] = []
    size: list[str] = []
    seen: set[str] = set()
    for fs in filesystems:
        if len(seen) >= MAX_FILESYSTEMS:
            break
        mountpoint = label_value(fs.mountpoint, LABEL_LIMITS["mountpoint"])
        if mountpoint in seen:
            continue  # two mounts on one point (or equal once cut): one series
        seen.add(mountpoint)
        fs_labels = (
            f'{labels},mountpoint="{mountpoint}",'
            f'fstype="{label_value(fs.type, LABEL_LIMITS["fstype"])}"'
        )
        if fs.used_bytes is not None:
            used.append(f"qgadash_filesystem_used_bytes{{{fs_labels}}} {fs.used_bytes}\n")
        if fs.total_bytes is not None:
            size.append(f"qgadash_filesystem_size_bytes{{{fs_labels}}} {fs.total_bytes}\n")
    return "".join(used), "".join(size)


def _interface_prefixes(labels: str, names: tuple[str, ...]) -> tuple[tuple[str, str] | None, ...]:
    """Each interface's two lines up to the value; None past the cap or for a repeat."""
    prefixes: list[tuple[str, str] | None] = []
    seen: set[str] = set()
    for raw in names:
        name = label_value(raw, LABEL_LIMITS["interface"])
        if len(seen) >= MAX_INTERFACES or name in seen:
            prefixes.append(None)
            continue
        seen.add(name)
        prefixes.append(
            (
                f'qgadash_network_receive_bytes_total{{{labels},interface="{name}"}} ',
                f'qgadash_network_transmit_bytes_total{{{labels},interface="{name}"}} ',
            )
        )
    return tuple(prefixes)
