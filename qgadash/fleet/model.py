"""The engine's plain data: who a VM is, and what is known about it right now.

Snapshots are immutable; the store replaces them whole. The UI and the CLI read only
these types, so neither needs to know how the facts were fetched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from qgadash.agent.replies import (
    AgentInfo,
    Disk,
    Filesystem,
    FreezeState,
    Interface,
    Load,
    OsInfo,
    Timezone,
    User,
)
from qgadash.fleet.live_stats import CounterRate
from qgadash.transport.base import HypervisorState

__all__ = [
    "HYPERVISOR_DOWN",
    "ActionResult",
    "AgentState",
    "FreezeState",
    "GuestFacts",
    "HypervisorState",
    "HypervisorStatus",
    "Lifecycle",
    "SessionMode",
    "VmRef",
    "VmSnapshot",
]


class AgentState(enum.Enum):
    """What the last poll of a VM's agent found (contracts.md, `agent.state`)."""

    PENDING = "pending"  # not polled yet
    OK = "ok"
    TIMEOUT = "timeout"  # connected, no answer
    UNREACHABLE = "unreachable"  # no connection
    ERROR = "error"  # answered with an error or nonsense
    # Not answering after this process shut it down, suspended or rebooted it (the
    # snapshot's `lifecycle` says which and when): expected, not a fault.
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    REBOOTING = "rebooting"


class SessionMode(enum.Enum):
    """Held: one connection kept open. Per-poll: connect, sync, run, close (shared sockets)."""

    HELD = "held"
    PER_POLL = "per-poll"


@dataclass(frozen=True, slots=True)
class VmRef:
    """A VM as the inventory knows it; `id` is `HYPERVISOR/NAME`."""

    hypervisor: str
    name: str
    address: str
    tags: tuple[str, ...] = ()
    session: SessionMode = SessionMode.PER_POLL

    @property
    def id(self) -> str:
        return f"{self.hypervisor}/{self.name}"


@dataclass(frozen=True, slots=True)
class GuestFacts:
    """What the guest reported; every member is None where the guest did not say."""

    info: AgentInfo | None = None
    os: OsInfo | None = None
    hostname: str | None = None
    users: tuple[User, ...] | None = None
    timezone: Timezone | None = None
    interfaces: tuple[Interface, ...] | None = None
    filesystems: tuple[Filesystem, ...] | None = None
    disks: tuple[Disk, ...] | None = None
    load: Load | None = None
    time_drift_s: float | None = None  # guest clock minus ours
    # Polled only while the fleet table shows its CPU % / DISK I/O column (live_stats.py).
    cpu: CounterRate | None = None
    disk_io: CounterRate | None = None

    @property
    def version(self) -> str | None:
        return self.info.version if self.info else None

    def command_enabled(self, name: str) -> bool | None:
        """True/False from guest-info; None when guest-info was never read."""
        if self.info is None:
            return None
        return self.info.enabled(name)

    @property
    def first_ipv4(self) -> str | None:
        for iface in self.interfaces or ():
            for addr in iface.addresses:
                if addr.family == "ipv4" and not addr.address.startswith("127."):
                    return addr.address
        return None

    @property
    def fullest_filesystem(self) -> Filesystem | None:
        best: Filesystem | None = None
        for fs in self.filesystems or ():
            frac = fs.used_fraction
            if frac is not None and (best is None or frac > (best.used_fraction or 0.0)):
                best = fs
        return best

    @property
    def os_label(self) -> str | None:
        if self.os is None:
            return None
        if self.os.name and self.os.version_id:
            return f"{self.os.name} {self.os.version_id}"
        return self.os.pretty_name or self.os.name or self.os.id


POWER_ACTIONS = ("powerdown", "halt", "reboot", "suspend-ram", "suspend-disk", "suspend-hybrid")


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A power action this process sent to a VM that has not come back from it yet.

    While it is set the VM keeps its row (and its id) even when its agent socket goes
    away, and a silent agent is the expected `stopped`/`suspended`/`rebooting`, not a
    fault. It ends when the agent answers again after having gone quiet, or when the
    operator removes the row.
    """

    action: str  # one of POWER_ACTIONS
    since: float  # wall clock when the request went out
    gone: bool = False  # the agent stopped answering since (so an answer means "back")

    @property
    def state(self) -> AgentState:
        if self.action == "reboot":
            return AgentState.REBOOTING
        if self.action.startswith("suspend-"):
            return AgentState.SUSPENDED
        return AgentState.STOPPED

    @property
    def label(self) -> str:
        """What the row says: "shut off by you", "suspended (ram)", "rebooting"."""
        if self.action == "reboot":
            return "rebooting"
        if self.action.startswith("suspend-"):
            return f"suspended ({self.action.removeprefix('suspend-')})"
        return "halted by you" if self.action == "halt" else "shut off by you"


@dataclass(frozen=True, slots=True)
class VmSnapshot:
    """Everything known about one VM at one moment."""

    ref: VmRef
    agent: AgentState = AgentState.PENDING
    error: str | None = None  # one line, for people
    latency_ms: float | None = None
    last_poll: float | None = None  # wall clock (time.time())
    last_seen: float | None = None  # last poll that got an answer
    facts: GuestFacts = field(default_factory=GuestFacts)
    freeze: FreezeState = FreezeState.UNKNOWN
    thaw_deadline: float | None = None  # wall clock; set while this process holds a freeze
    thaw_error: str | None = None  # a thaw this process owes and could not do
    lifecycle: Lifecycle | None = None  # a power action this process sent, not back yet

    @property
    def id(self) -> str:
        return self.ref.id


# A hypervisor in one of these states cannot be reached: its VMs are not seen at all.
HYPERVISOR_DOWN = frozenset(
    {HypervisorState.UNREACHABLE, HypervisorState.AUTH_FAILED, HypervisorState.HOST_KEY_REJECTED}
)


@dataclass(frozen=True, slots=True)
class HypervisorStatus:
    name: str
    state: HypervisorState
    error: str | None = None
    vm_count: int = 0


@dataclass(frozen=True, slots=True)
class ActionResult:
    """One VM's outcome of an action; `ok` None means unknown (the link died mid-way)."""

    vm_id: str
    ok: bool | None
    value: Any = None
    error: str | None = None
    elapsed_ms: float = 0.0
