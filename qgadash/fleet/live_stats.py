"""Live CPU % and disk I/O rates: of one VM for the views that have it open, and of
every VM while the fleet table shows its optional CPU % or DISK I/O column.

`StatsSampler` reads guest-get-cpustats and guest-get-diskstats (qemu-ga 7.1+) when a
view asks, and turns two samples into rates. Fleet-wide they are polled only while a
column needs them (every poll of every VM pays for them then); each poll's reply
becomes a `CounterRate` (`next_cpu`, `next_disks`): the counters, and the rate since the
last poll's, with the same `sample_of` and `rates` as the sampler. CPU % is busy time
over all time of every vCPU the guest reports (whatever the unit: qemu-ga says
milliseconds); disk rates use 512-byte sectors.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentUnsupported

T = TypeVar("T")

# Sectors in /proc/diskstats are 512 bytes whatever the disk's block size.
SECTOR_BYTES = 512


class AgentAccess(Protocol):
    """What sampling needs from the engine (FleetEngine satisfies it)."""

    async def with_agent(self, vm_id: str, work: Callable[[AgentCaller], Awaitable[T]]) -> T: ...

    @property
    def action_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One reading of the CPU and disk counters, at monotonic time `at`."""

    at: float
    cpu_busy: int  # ticks not idle or iowait, all CPUs
    cpu_total: int
    disks: dict[str, tuple[int, int]]  # name -> (bytes read, bytes written)


@dataclass(frozen=True, slots=True)
class LiveStats:
    """Rates between two samples: CPU busy % (of all vCPUs) and disk bytes a second."""

    cpu_percent: float | None
    disk_read_bps: dict[str, float]
    disk_write_bps: dict[str, float]


# Idle, waiting, stolen by the host, or already counted in user/nice (guest time).
_NOT_BUSY = frozenset({"idle", "iowait", "steal", "guest", "guestnice"})


def sample_of(
    cpus: Sequence[replies.CpuStat] | None, disks: Sequence[replies.DiskStat] | None, at: float
) -> StatsSample:
    busy = total = 0
    for cpu in cpus or ():
        for key, value in cpu.counters.items():
            total += value
            if key not in _NOT_BUSY:
                busy += value
    io = {
        d.name: (
            d.counters.get("read-sectors", 0) * SECTOR_BYTES,
            d.counters.get("write-sectors", 0) * SECTOR_BYTES,
        )
        for d in disks or ()
    }
    return StatsSample(at, busy, total, io)


def rates(old: StatsSample, new: StatsSample) -> LiveStats:
    """CPU % and disk rates over the interval; counters that went back (a reboot) give
    no rate rather than a negative one."""
    seconds = new.at - old.at
    cpu: float | None = None
    ticks = new.cpu_total - old.cpu_total
    if ticks > 0 and new.cpu_busy >= old.cpu_busy:
        cpu = min(100.0, 100.0 * (new.cpu_busy - old.cpu_busy) / ticks)
    read: dict[str, float] = {}
    write: dict[str, float] = {}
    if seconds > 0:
        for name, (r, w) in new.disks.items():
            before = old.disks.get(name)
            if before is None or r < before[0] or w < before[1]:
                continue
            read[name] = (r - before[0]) / seconds
            write[name] = (w - before[1]) / seconds
    return LiveStats(cpu, read, write)


class StatsSampler:
    """CPU % and disk rates of one VM from guest-get-cpustats / guest-get-diskstats,
    each call comparing with the previous one; commands the agent lacks are left out."""

    def __init__(
        self, access: AgentAccess, vm_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._access = access
        self._vm_id = vm_id
        self._clock = clock
        self._last: StatsSample | None = None
        self.has_cpu = True
        self.has_disks = True

    async def sample(self) -> LiveStats | None:
        """The rates since the last call (None on the first)."""
        timeout = self._access.action_timeout
        names = [
            n
            for n, on in (
                ("guest-get-cpustats", self.has_cpu),
                ("guest-get-diskstats", self.has_disks),
            )
            if on
        ]
        if not names:
            return None

        async def work(c: AgentCaller) -> list[Any]:
            return await c.call_many([(n, None) for n in names], timeout=timeout)

        try:
            results = await self._access.with_agent(self._vm_id, work)
        except AgentUnsupported as exc:  # known from guest-info: never sent
            if exc.command == "guest-get-cpustats":
                self.has_cpu = False
            else:
                self.has_disks = False
            return await self.sample()
        cpus: tuple[replies.CpuStat, ...] | None = None
        disks: tuple[replies.DiskStat, ...] | None = None
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Exception):
                if name == "guest-get-cpustats":
                    self.has_cpu = False
                else:
                    self.has_disks = False
                continue
            if name == "guest-get-cpustats":
                cpus = replies.parse_cpustats(result)
            else:
                disks = replies.parse_diskstats(result)
        sample = sample_of(cpus, disks, self._clock())
        last, self._last = self._last, sample
        return rates(last, sample) if last is not None else None


@dataclass(frozen=True, slots=True)
class CounterRate:
    """A VM's CPU or disk counters at its last poll, and the rates since the poll before
    (None after the first): what the fleet table's CPU % and DISK I/O columns show."""

    sample: StatsSample
    rate: LiveStats | None

    @property
    def cpu_percent(self) -> float | None:
        return self.rate.cpu_percent if self.rate is not None else None

    @property
    def disk_bps(self) -> float | None:
        """Bytes read and written a second, all disks together."""
        if self.rate is None or not self.rate.disk_read_bps:
            return None
        return sum(self.rate.disk_read_bps.values()) + sum(self.rate.disk_write_bps.values())


def next_cpu(
    previous: CounterRate | None, cpus: Sequence[replies.CpuStat], at: float
) -> CounterRate:
    """A guest-get-cpustats reply taken at monotonic time `at`, after `previous`."""
    sample = sample_of(cpus, None, at)
    return CounterRate(sample, rates(previous.sample, sample) if previous else None)


def next_disks(
    previous: CounterRate | None, disks: Sequence[replies.DiskStat], at: float
) -> CounterRate:
    """A guest-get-diskstats reply taken at monotonic time `at`, after `previous`."""
    sample = sample_of(None, disks, at)
    return CounterRate(sample, rates(previous.sample, sample) if previous else None)
