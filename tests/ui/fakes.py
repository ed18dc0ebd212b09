"""Deterministic fleets for UI tests, snapshots and benchmarks, and `FakeEngine`: the
part of `FleetEngine` the dashboard reads (`qgadash.ui.engine_api.Engine`) over a real
`FleetStore` holding them. It runs no action; see its docstring for which tests need
it and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qgadash.agent.errors import AgentConnectionError
from qgadash.agent.replies import (
    AgentInfo,
    CommandInfo,
    Disk,
    Filesystem,
    FreezeState,
    Interface,
    InterfaceStats,
    IpAddress,
    Load,
    OsInfo,
    Timezone,
    User,
)
from qgadash.fleet.actions import Action, ActionPlan, ReadOnlyError, make_plan
from qgadash.fleet.admin import GuestAdmin
from qgadash.fleet.config import Settings
from qgadash.fleet.files import DirListing, FileSlice, ListingUnavailable
from qgadash.fleet.guard import Hold
from qgadash.fleet.keeping import Settled
from qgadash.fleet.model import (
    ActionResult,
    AgentState,
    GuestFacts,
    HypervisorStatus,
    VmRef,
    VmSnapshot,
)
from qgadash.fleet.store import CounterSample, FleetStore
from qgadash.transport.base import HypervisorState

T = TypeVar("T")

NOW = 1_764_072_000.0  # 2025-11-25 12:00:00 UTC: a fixed clock for snapshots

COMMANDS = (
    "guest-ping", "guest-info", "guest-sync-delimited", "guest-get-osinfo", "guest-get-host-name",
    "guest-network-get-interfaces", "guest-get-fsinfo", "guest-get-disks", "guest-get-users",
    "guest-get-timezone", "guest-get-time", "guest-get-load", "guest-fsfreeze-status",
    "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw", "guest-fstrim",
    "guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid",
    "guest-exec", "guest-exec-status", "guest-file-open", "guest-file-read", "guest-file-write",
    "guest-file-seek", "guest-file-close",
)  # fmt: skip


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def agent_info(version: str = "8.2.0", disabled: Sequence[str] = ()) -> AgentInfo:
    return AgentInfo(
        version,
        tuple(
            CommandInfo(
                name,
                name not in disabled,
                name
                not in (
                    "guest-shutdown",
                    "guest-suspend-ram",
                    "guest-suspend-disk",
                    "guest-suspend-hybrid",
                ),
            )
            for name in COMMANDS
        ),
    )


def linux_facts(
    i: int,
    *,
    hostname: str | None = None,
    os_name: str = "Debian GNU/Linux",
    version_id: str = "12",
    disabled: Sequence[str] = (),
    load: float | None = None,
    fs_used: float = 0.41,
) -> GuestFacts:
    total = 40_000_000_000
    return GuestFacts(
        info=agent_info(disabled=disabled),
        os=OsInfo(
            "debian",
            os_name,
            f"{os_name} {version_id}",
            version_id,
            version_id,
            "6.1.0-27-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1",
            "x86_64",
            None,
        ),
        hostname=hostname if hostname is not None else f"web-{i:02d}",
        users=(User("root", None, NOW - 3600 * 5),),
        timezone=Timezone("UTC", 0),
        interfaces=(
            Interface(
                "lo",
                "00:00:00:00:00:00",
                (IpAddress("127.0.0.1", 8, "ipv4"), IpAddress("::1", 128, "ipv6")),
                None,
            ),
            Interface(
                "eth0",
                f"52:54:00:12:34:{i:02x}",
                (
                    IpAddress(f"10.0.1.{10 + i}", 24, "ipv4"),
                    IpAddress(f"fe80::5054:ff:fe12:34{i:02x}", 64, "ipv6"),
                ),
                InterfaceStats(1_000_000 * i, 200_000 * i, 0, 0, 0, 0, 0, 0),
            ),
        ),
        filesystems=(
            Filesystem("vda1", "/", "ext4", int(total * fs_used), total, ("vda1",)),
            Filesystem("vdb", "/data", "xfs", int(200e9 * 0.2), int(200e9), ("vdb",)),
        ),
        disks=(Disk("/dev/vda", False, None, ()), Disk("/dev/vda1", True, None, ("/dev/vda",))),
        load=Load(load if load is not None else 0.12 * (i % 5), 0.1, 0.05),
        time_drift_s=0.3,
    )


def windows_facts(i: int) -> GuestFacts:
    return GuestFacts(
        info=agent_info("107.0.1", disabled=("guest-exec", "guest-exec-status")),
        os=OsInfo(
            "mswindows",
            "Microsoft Windows Server 2022",
            "Windows Server 2022 Standard",
            "2022",
            "2022",
            "10.0.20348",
            "20348",
            "x86_64",
            "server",
        ),
        hostname=f"WIN-{i:02d}",
        users=(),
        timezone=Timezone("W. Europe Standard Time", 3600),
        interfaces=(
            Interface(
                "Ethernet", f"52:54:00:aa:bb:{i:02x}", (IpAddress(f"10.0.2.{i}", 24, "ipv4"),), None
            ),
        ),
        filesystems=(Filesystem("C:", "C:\\", "NTFS", int(60e9 * 0.88), int(60e9), ("disk0",)),),
        disks=None,
        load=None,
        time_drift_s=-2.7,
    )


def mixed_fleet(n: int = 24) -> tuple[list[VmSnapshot], list[HypervisorStatus]]:
    """A deterministic fleet with every state on screen: ok, timeout, unreachable, error,
    pending, frozen with a deadline, frozen by someone else, a failed thaw, full disks,
    a Windows guest with exec disabled, and one hostile hostname."""
    hvs = ["hv1", "hv2", "hv3"]
    snaps: list[VmSnapshot] = []
    for i in range(n):
        hv = hvs[i % 3] if i < n - 2 else "hv1"
        kind = i % 12
        name = f"web-{i:02d}" if kind not in (4, 9) else f"db-{i:02d}"
        tags: tuple[str, ...] = ("prod", "web") if name.startswith("web") else ("prod", "db")
        if i % 5 == 0:
            tags = ("lab",)
        ref = VmRef(hv, name, f"unix:/run/qga/{name}.sock", tags)
        facts = linux_facts(i, fs_used=0.41 + (i % 7) * 0.09)
        snap = VmSnapshot(
            ref,
            AgentState.OK,
            None,
            0.4 + i * 0.1,
            NOW - 1,
            NOW - 1 - (i % 3),
            facts,
            FreezeState.THAWED,
        )
        if kind == 1:
            snap = dataclasses.replace(
                snap,
                agent=AgentState.TIMEOUT,
                error="no reply within 3.0 s",
                latency_ms=None,
                last_seen=NOW - 34,
            )
        elif kind == 2:
            snap = dataclasses.replace(
                snap,
                agent=AgentState.UNREACHABLE,
                latency_ms=None,
                error="connect: No such file or directory",
                last_seen=NOW - 3600 * 3,
                facts=GuestFacts(),
            )
        elif kind == 3:
            snap = dataclasses.replace(snap, freeze=FreezeState.FROZEN, thaw_deadline=NOW + 47)
        elif kind == 5:
            snap = dataclasses.replace(snap, facts=windows_facts(i), latency_ms=12.5)
        elif kind == 6:
            snap = dataclasses.replace(
                snap,
                agent=AgentState.ERROR,
                error="reply is not JSON",
                latency_ms=None,
                last_seen=NOW - 300,
            )
        elif kind == 7:
            snap = dataclasses.replace(
                snap,
                freeze=FreezeState.FROZEN,
                thaw_error="guest-fsfreeze-thaw: timeout after 30 s",
            )
        elif kind == 8:
            snap = dataclasses.replace(snap, freeze=FreezeState.FROZEN, thaw_deadline=None)
        elif kind == 10:
            snap = dataclasses.replace(
                snap,
                agent=AgentState.PENDING,
                latency_ms=None,
                last_seen=None,
                facts=GuestFacts(),
                freeze=FreezeState.UNKNOWN,
            )
        elif kind == 11:
            snap = dataclasses.replace(snap, latency_ms=812.0)
        snaps.append(snap)
    statuses = [
        HypervisorStatus("hv1", HypervisorState.LOCAL, None, 0),
        HypervisorStatus("hv2", HypervisorState.CONNECTED, None, 0),
        HypervisorStatus(
            "hv3",
            HypervisorState.HOST_KEY_REJECTED,
            "ssh: host key changed for hv3.example.net, see ~/.ssh/known_hosts",
            0,
        ),
    ]
    return snaps, statuses


def hostile_snapshot() -> VmSnapshot:
    ref = VmRef("hv1", "evil", "unix:/run/qga/evil.sock", ("prod",))
    facts = dataclasses.replace(linux_facts(99), hostname="[bold]x[/]\x1b[31mred\u202eevil")
    return VmSnapshot(ref, AgentState.OK, None, 0.5, NOW - 1, NOW - 1, facts, FreezeState.THAWED)


def big_fleet(n: int) -> list[VmSnapshot]:
    """n healthy-ish VMs (every 10th timing out) for benchmarks."""
    out = []
    for i in range(n):
        ref = VmRef(f"hv{i % 20}", f"vm-{i:05d}", f"unix:/run/qga/vm-{i:05d}.sock", ("bench",))
        facts = linux_facts(i % 200, hostname=f"vm-{i:05d}")
        state = AgentState.TIMEOUT if i % 10 == 0 else AgentState.OK
        out.append(VmSnapshot(ref, state, None, 0.5, NOW - 1, NOW - 1, facts, FreezeState.THAWED))
    return out


class NoActions(AssertionError):
    """A FakeEngine was asked to act: that is the real engine's job in these tests."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"FakeEngine runs no {what}: test it on the real engine with simulated guests "
            "(make_sim_rig in tests/ui/conftest.py)"
        )


class NoFiles:
    """The files pane's engine side, absent: file tests run on the real engine."""

    def can_list(self, vm_id: str) -> str | None:
        return "the fake engine has no guest files"

    async def list_dir(self, vm_id: str, path: str) -> DirListing:
        raise ListingUnavailable(self.can_list(vm_id) or "")

    async def read(
        self, vm_id: str, path: str, *, offset: int = 0, max_bytes: int = 1 << 20
    ) -> FileSlice:
        raise NoActions("file reads")

    async def tail(self, vm_id: str, path: str, *, max_bytes: int = 64 * 1024) -> FileSlice:
        raise NoActions("file reads")

    async def download(
        self,
        vm_id: str,
        path: str,
        local: Path,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        overwrite: bool = False,
    ) -> int:
        raise NoActions("downloads")

    async def upload(
        self,
        vm_id: str,
        local: Path,
        path: str,
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        raise NoActions("uploads")


class HoldingStore(FleetStore):
    """A FleetStore that also keeps the ids of the VMs showing a hold (a deadline or a
    failed thaw), as the real engine's guard knows its holds without visiting the fleet:
    the header reads the holds twice a tick, and finding them in every snapshot cost
    ~3 ms a read at 10,000 VMs in bench/ui_table.py, time the real dashboard never spends."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()

    def put(self, snapshot: VmSnapshot) -> None:
        super().put(snapshot)
        if snapshot.thaw_deadline is not None or snapshot.thaw_error is not None:
            self.held.add(snapshot.id)
        else:
            self.held.discard(snapshot.id)

    def remove(self, vm_id: str) -> None:
        super().remove(vm_id)
        self.held.discard(vm_id)


class FakeEngine:
    """The dashboard's view of FleetEngine on a fixed store, for what no engine can show.

    It polls nothing and runs nothing: every action (freeze, thaw, power, exec, fstrim,
    raw commands, files) is recorded in `calls` and raises `NoActions`; agent sessions
    (the admin verbs, the details' live stats) fail as if the agent were down.
    What it can do that a real engine cannot, and the tests that need it:
    - a fleet in every state at once, fixed to the second (`mixed_fleet`: timeouts,
      unreachable, errors, pending, holds with deadlines, failed thaws, a hypervisor
      whose host key changed, hostile text) under a fixed clock: the snapshot SVGs
      (test_snapshots.py), the filter, sort, marks, keys, help, header and theme tests
      (test_fleet.py, test_operator_screen.py, test_palette_and_details.py' theme and
      tab tests) and the terminal byte counts (test_terminal_bytes.py);
    - a keeper check held open until the test lets it answer (`keeper_gate`), and a
      hypervisor that cannot arm one (`no_keeper`): the freeze dialog's wait
      (test_fleet.py) and its snapshot;
    - thousands of VMs without sockets: bench/ui_table.py's render benchmark.
    Engine behaviour (actions, files, polls, quitting with holds) is tested on the real
    engine with simulated guests: test_*_on_engine.py, test_files*.py, test_fleet.py's
    power and read-only tests, test_palette_and_details.py, test_with_simulator.py.
    """

    def __init__(
        self,
        snapshots: Sequence[VmSnapshot] = (),
        hypervisors: Sequence[HypervisorStatus] = (),
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = HoldingStore()
        self.settings = settings or Settings()
        self.files = NoFiles()
        self.admin = GuestAdmin(self)  # its verbs reach with_agent, which refuses
        self.clock = clock or FakeClock()
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.polled_stats = (False, False)  # what poll_stats was last told
        self.keeper_kinds: dict[str, str] = {}  # vm id -> keeper kind of its hold
        self.no_keeper: dict[str, str] = {}  # vm id -> why no keeper can be armed
        self.keeper_gate: asyncio.Event | None = None  # keepers() answers once it is set
        for snap in snapshots:
            self.store.put(snap)
        for hv in hypervisors:
            self.store.set_hypervisor(hv)

    # -- what the dashboard reads -----------------------------------------------------------

    async def start(self) -> None:
        pass

    async def settle_journal(self) -> list[Settled]:
        return []

    async def stop(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        """Nothing to thaw: the holds shown are data (quitting with holds: the real engine)."""
        return []

    def _held(self) -> list[VmSnapshot]:
        """This session's holds, as the fixed fleet shows them: a deadline or a failed thaw."""
        return [s for vm_id in self.store.held if (s := self.store.get(vm_id)) is not None]

    def frozen_by_us(self) -> list[str]:
        return sorted(s.id for s in self._held())

    def holds(self) -> list[Hold]:
        out = []
        for snap in sorted(self._held(), key=lambda s: s.id):
            deadline = snap.thaw_deadline
            keeper = self.keeper_kinds.get(snap.id, "local" if deadline is not None else "none")
            out.append(Hold(snap.id, deadline, keeper=keeper, error=snap.thaw_error))
        return out

    def is_local(self, vm_id: str) -> bool:
        snap = self.store.get(vm_id)
        hv = next(
            (h for h in self.store.hypervisors() if snap and h.name == snap.ref.hypervisor), None
        )
        return hv is not None and hv.state is HypervisorState.LOCAL

    async def keepers(self, vm_ids: Sequence[str]) -> dict[str, str | None]:
        if self.keeper_gate is not None:
            await self.keeper_gate.wait()
        return {vm_id: self.no_keeper.get(vm_id) for vm_id in vm_ids}

    def plan(self, action: Action, vm_ids: Sequence[str]) -> ActionPlan:
        return make_plan(action, [(v, self.store.get(v)) for v in vm_ids], set(self.frozen_by_us()))

    def poll_stats(self, *, cpu: bool, disks: bool) -> None:
        self.polled_stats = (cpu, disks)

    # -- what it refuses ---------------------------------------------------------------------

    def _refuse(self, what: str, vm_ids: Sequence[str]) -> NoActions:
        self.calls.append((what, tuple(vm_ids)))
        return NoActions(what)

    def check_writable(self) -> None:
        if self.settings.read_only:
            raise ReadOnlyError("read-only mode: actions are off")

    action_timeout = 1.0  # what GuestAdmin reads

    def dismiss_thaw_error(self, vm_id: str) -> None:
        """Forget a failed thaw (this process's record only, as the engine does)."""
        self.calls.append(("dismiss", (vm_id,)))
        self.store.update(vm_id, thaw_error=None, thaw_deadline=None)

    async def with_agent(self, vm_id: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """No agent to reach, as for a VM whose agent is down: the details' live stats
        (sampled through here) say so instead of failing the screen."""
        raise AgentConnectionError(f"{vm_id}: the fake engine has no agents")

    async def run_bulk(
        self,
        action: str,
        vm_ids: Sequence[str],
        arguments: Any,
        one: Callable[[str], Awaitable[Any]],
        progress: Callable[[ActionResult], None] | None,
    ) -> list[ActionResult]:
        raise self._refuse(action, vm_ids)

    async def freeze(
        self,
        vm_ids: Sequence[str],
        *,
        mountpoints: Sequence[str] | None = None,
        thaw_after: float | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        raise self._refuse("freeze", vm_ids)

    async def thaw(
        self, vm_ids: Sequence[str], *, progress: Callable[[ActionResult], None] | None = None
    ) -> list[ActionResult]:
        raise self._refuse("thaw", vm_ids)

    async def shutdown(
        self,
        vm_ids: Sequence[str],
        *,
        mode: str = "powerdown",
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        raise self._refuse("shutdown", vm_ids)

    async def suspend(
        self,
        vm_ids: Sequence[str],
        *,
        kind: str,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        raise self._refuse("suspend", vm_ids)

    async def fstrim(
        self,
        vm_ids: Sequence[str],
        *,
        minimum: int | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        raise self._refuse("fstrim", vm_ids)

    async def exec(
        self,
        vm_ids: Sequence[str],
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        raise self._refuse("exec", vm_ids)

    async def agent_command(
        self, vm_id: str, name: str, args: dict[str, Any] | None
    ) -> ActionResult:
        raise self._refuse(f"raw command {name}", [vm_id])

    async def forget(self, vm_id: str) -> bool:
        raise self._refuse("forget", [vm_id])

    # -- test helpers ----------------------------------------------------------------------

    def record_nic(
        self, vm_id: str, samples: Sequence[tuple[float, int, int]], iface: str = "eth0"
    ) -> None:
        """NIC counters as polls would have recorded them (the detail tab's rates)."""
        self.store.record_nic_counters(
            vm_id, [(iface, CounterSample(at, rx, tx)) for at, rx, tx in samples]
        )
