"""An in-memory engine and deterministic fleets for UI tests, snapshots and benchmarks.

`FakeEngine` implements the part of `FleetEngine` the dashboard uses (see
`qgadash.ui.engine_api.Engine`) on a real `FleetStore`; actions change the store the
way the real engine does (freeze sets FROZEN and a thaw deadline, thaw clears it).
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
from qgadash.fleet.files import DirEntry, DirListing, FileSlice, ListingUnavailable
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
        tags = ("prod", "web") if name.startswith("web") else ("prod", "db")
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


class FakeFiles:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.tree: dict[str, dict[str, bytes]] = {}  # vm id -> path -> content
        self.delay = 0.0
        self.uploads: list[tuple[str, str, bytes]] = []

    def can_list(self, vm_id: str) -> str | None:
        snap = self.engine.store.get(vm_id)
        if snap is None:
            return "no such VM"
        if snap.agent is not AgentState.OK:
            return f"the agent is {snap.agent.value}"
        info = snap.facts.info
        if info is not None and not info.enabled("guest-exec"):
            return "guest-exec is disabled by the guest's policy: open a file by path"
        return None

    def _files(self, vm_id: str) -> dict[str, bytes]:
        return self.tree.setdefault(vm_id, {})

    async def list_dir(self, vm_id: str, path: str) -> DirListing:
        reason = self.can_list(vm_id)
        if reason:
            raise ListingUnavailable(reason)
        await asyncio.sleep(self.delay)
        prefix = path.rstrip("/") + "/"
        entries: dict[str, DirEntry] = {}
        for p, data in self._files(vm_id).items():
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :]
            head, _, tail = rest.partition("/")
            if tail:
                entries[head] = DirEntry(head, "dir", None, NOW - 600)
            else:
                entries[head] = DirEntry(head, "file", len(data), NOW - 60)
        ordered = sorted(entries.values(), key=lambda e: (e.kind != "dir", e.name))
        return DirListing(vm_id, path, tuple(ordered), "guest-exec")

    async def read(
        self, vm_id: str, path: str, *, offset: int = 0, max_bytes: int = 1 << 20
    ) -> FileSlice:
        await asyncio.sleep(self.delay)
        data = self._files(vm_id).get(path)
        if data is None:
            raise OSError(f"{path}: No such file or directory")
        piece = data[offset : offset + max_bytes]
        return FileSlice(piece, offset, offset + len(piece) >= len(data), len(data))

    async def tail(self, vm_id: str, path: str, *, max_bytes: int = 64 * 1024) -> FileSlice:
        data = self._files(vm_id).get(path)
        if data is None:
            raise OSError(f"{path}: No such file or directory")
        start = max(0, len(data) - max_bytes)
        return FileSlice(data[start:], start, True, len(data))

    async def download(
        self,
        vm_id: str,
        path: str,
        local: Path,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        overwrite: bool = False,
    ) -> int:
        if local.exists() and not overwrite:
            raise FileExistsError(f"{local}: exists (not replaced)")
        data = self._files(vm_id)[path]
        done = 0
        with local.open("wb") as out:
            for i in range(0, len(data), 4096):
                await asyncio.sleep(self.delay)
                out.write(data[i : i + 4096])
                done += len(data[i : i + 4096])
                if progress:
                    progress(done, len(data))
        return done

    async def upload(
        self,
        vm_id: str,
        local: Path,
        path: str,
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        data = local.read_bytes()
        await asyncio.sleep(self.delay)
        self._files(vm_id)[path] = data
        self.uploads.append((vm_id, path, data))
        if progress:
            progress(len(data), len(data))
        return len(data)


class FakeEngine:
    """The dashboard's view of FleetEngine, in memory."""

    def __init__(
        self,
        snapshots: Sequence[VmSnapshot] = (),
        hypervisors: Sequence[HypervisorStatus] = (),
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = FleetStore()
        self.settings = settings or Settings()
        self.files = FakeFiles(self)
        self.admin = GuestAdmin(self)  # its verbs reach no agent here: see with_agent
        self.clock = clock or FakeClock()
        self.calls: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.started = False
        self.polled_stats = (False, False)  # what poll_stats was last told
        self.stopped = 0
        self.action_delay = 0.0
        self.fail: dict[str, str] = {}  # vm id -> error for any action
        self._owned: set[str] = set()
        self.keeper_kinds: dict[str, str] = {}  # vm id -> keeper kind of its hold
        self.no_keeper: dict[str, str] = {}  # vm id -> why no keeper can be armed
        self.keeper_gate: asyncio.Event | None = None  # keepers() answers once it is set
        self._pending: list[VmSnapshot] = list(snapshots)
        for snap in snapshots:
            self.store.put(snap)
            if snap.thaw_deadline is not None or snap.thaw_error is not None:
                self._owned.add(snap.id)
        for hv in hypervisors:
            self.store.set_hypervisor(hv)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def settle_journal(self) -> list[Settled]:
        return []

    async def stop(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        self.stopped += 1
        self.calls.append(("stop", tuple(sorted(self._owned)), {}))
        results = [await self._thaw_one(vm_id) for vm_id in sorted(self._owned)]
        return results

    def frozen_by_us(self) -> list[str]:
        return sorted(self._owned)

    def holds(self) -> list[Hold]:
        """The holds behind `frozen_by_us`, from the snapshots (keeper: `keeper_kinds`)."""
        out = []
        for vm_id in sorted(self._owned):
            snap = self.store.get(vm_id)
            deadline = snap.thaw_deadline if snap else None
            keeper = self.keeper_kinds.get(vm_id, "local" if deadline is not None else "none")
            out.append(
                Hold(vm_id, deadline, keeper=keeper, error=snap.thaw_error if snap else None)
            )
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
        return make_plan(action, [(v, self.store.get(v)) for v in vm_ids], self._owned)

    def poll_stats(self, *, cpu: bool, disks: bool) -> None:
        self.polled_stats = (cpu, disks)

    def dismiss_thaw_error(self, vm_id: str) -> None:
        self.calls.append(("dismiss", (vm_id,), {}))
        self._owned.discard(vm_id)
        self.store.update(vm_id, thaw_error=None, thaw_deadline=None)

    # -- actions ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.settings.read_only:
            raise ReadOnlyError("read-only mode: actions are off")

    # What GuestAdmin needs (the admin verbs are tested on the real engine, not here).
    check_writable = _check
    action_timeout = 1.0

    async def with_agent(self, vm_id: str, work: Callable[[Any], Awaitable[T]]) -> T:
        raise AgentConnectionError(f"{vm_id}: the fake engine has no agents")

    async def run_bulk(
        self,
        action: str,
        vm_ids: Sequence[str],
        arguments: Any,
        one: Callable[[str], Awaitable[Any]],
        progress: Callable[[ActionResult], None] | None,
    ) -> list[ActionResult]:
        results = []
        for vm_id in vm_ids:
            try:
                result = ActionResult(vm_id, True, await one(vm_id), None, 1.0)
            except AgentConnectionError as exc:
                result = ActionResult(vm_id, False, None, str(exc), 1.0)
            if progress:
                progress(result)
            results.append(result)
        return results

    async def _each(
        self,
        name: str,
        vm_ids: Sequence[str],
        kwargs: dict[str, Any],
        one: Callable[[str], Any],
        progress: Callable[[ActionResult], None] | None,
    ) -> list[ActionResult]:
        self._check()
        self.calls.append((name, tuple(vm_ids), kwargs))
        results = []
        for vm_id in vm_ids:
            await asyncio.sleep(self.action_delay)
            if vm_id in self.fail:
                result = ActionResult(vm_id, False, None, self.fail[vm_id], 1.0)
            else:
                result = ActionResult(vm_id, True, one(vm_id), None, 1.0)
            if progress:
                progress(result)
            results.append(result)
        return results

    async def freeze(
        self,
        vm_ids: Sequence[str],
        *,
        mountpoints: Sequence[str] | None = None,
        thaw_after: float | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        after = self.settings.thaw_after if thaw_after is None else thaw_after

        def one(vm_id: str) -> int:
            deadline = self.clock() + after if after > 0 else None
            if deadline is not None:
                self._owned.add(vm_id)
            self.store.update(vm_id, freeze=FreezeState.FROZEN, thaw_deadline=deadline)
            return 2

        return await self._each("freeze", vm_ids, {"thaw_after": thaw_after}, one, progress)

    async def _thaw_one(self, vm_id: str) -> ActionResult:
        if vm_id in self.fail:
            self.store.update(vm_id, thaw_error=self.fail[vm_id])
            return ActionResult(vm_id, False, None, self.fail[vm_id], 1.0)
        self._owned.discard(vm_id)
        self.store.update(vm_id, freeze=FreezeState.THAWED, thaw_deadline=None, thaw_error=None)
        return ActionResult(vm_id, True, 2, None, 1.0)

    async def thaw(
        self, vm_ids: Sequence[str], *, progress: Callable[[ActionResult], None] | None = None
    ) -> list[ActionResult]:
        def one(vm_id: str) -> int:
            self._owned.discard(vm_id)
            self.store.update(vm_id, freeze=FreezeState.THAWED, thaw_deadline=None, thaw_error=None)
            return 2

        return await self._each("thaw", vm_ids, {}, one, progress)

    async def thaw_due(self) -> None:
        """What the freeze guard does at a deadline: thaw every VM whose deadline passed."""
        now = self.clock()
        for vm_id in list(self._owned):
            snap = self.store.get(vm_id)
            if snap and snap.thaw_deadline is not None and snap.thaw_deadline <= now:
                await self._thaw_one(vm_id)

    async def shutdown(
        self,
        vm_ids: Sequence[str],
        *,
        mode: str = "powerdown",
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        return await self._each("shutdown", vm_ids, {"mode": mode}, lambda _: "sent", progress)

    async def suspend(
        self,
        vm_ids: Sequence[str],
        *,
        kind: str,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        return await self._each("suspend", vm_ids, {"kind": kind}, lambda _: "sent", progress)

    async def fstrim(
        self,
        vm_ids: Sequence[str],
        *,
        minimum: int | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        trimmed = [{"path": "/", "trimmed": 1 << 20, "minimum": 0, "error": None}]
        return await self._each("fstrim", vm_ids, {"minimum": minimum}, lambda _: trimmed, progress)

    async def exec(
        self,
        vm_ids: Sequence[str],
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        progress: Callable[[ActionResult], None] | None = None,
    ) -> list[ActionResult]:
        def one(vm_id: str) -> dict[str, Any]:
            out = f"{' '.join(argv)} on {vm_id}\n"
            return {
                "exitcode": 0,
                "signal": None,
                "stdout": out,
                "stderr": "",
                "stdout_truncated": False,
                "stderr_truncated": False,
            }

        return await self._each("exec", vm_ids, {"argv": list(argv)}, one, progress)

    async def agent_command(
        self, vm_id: str, name: str, args: dict[str, Any] | None
    ) -> ActionResult:
        self.calls.append(("agent", (vm_id,), {"name": name, "args": args}))
        return ActionResult(vm_id, True, {"name": name}, None, 1.0)

    async def forget(self, vm_id: str) -> bool:
        snap = self.store.get(vm_id)
        if snap is None or snap.lifecycle is None:
            return False
        self.store.remove(vm_id)
        return True

    # -- test helpers ----------------------------------------------------------------------

    def record_nic(
        self, vm_id: str, samples: Sequence[tuple[float, int, int]], iface: str = "eth0"
    ) -> None:
        self.store.record_nic_counters(
            vm_id, [(iface, CounterSample(at, rx, tx)) for at, rx, tx in samples]
        )
