"""Counters that move: load averages, per-CPU times, per-disk I/O."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.state import AgentState
from qgadash.sim.wire import QFloat


class StatsCommands(AgentState):
    """guest-get-load, guest-get-cpustats, guest-get-diskstats."""

    __slots__ = ()

    def _cmd_load(self, args: dict[str, object]) -> object:
        l1, l5, l15 = self._loads()
        return {"load1m": QFloat(l1), "load5m": QFloat(l5), "load15m": QFloat(l15)}

    def _cmd_diskstats(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        result = []
        for minor, disk in enumerate(self._disks()):
            dev = disk.dev.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
            reads = self._counter(12_000 + minor * 1000, 3.0 * self._profile.load, t)
            writes = self._counter(40_000 + minor * 3000, 8.0 * self._profile.load, t)
            stats = {
                "discard-sectors": 0,
                "write-ios": writes,
                "discard-ios": 0,
                "discard-ticks": 0,
                "weight-ticks": writes * 3,
                "read-ios": reads,
                "flush-ios": writes // 10,
                "write-sectors": writes * 16,
                "write-merges": writes // 4,
                "write-ticks": writes * 2,
                "ios-pgr": 0,
                "read-sectors": reads * 24,
                "read-merges": reads // 8,
                "total-ticks": (reads + writes) * 2,
                "discard-merges": 0,
                "flush-ticks": writes // 5,
                "read-ticks": reads * 2,
            }
            result.append({"name": dev, "stats": stats, "minor": minor * 16, "major": 253})
        return result

    def _cmd_cpustats(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        per_cpu = max(0.01, self._profile.load / max(1, self._profile.vcpus))
        result = []
        offline = self._offline_cpus or set()
        # qemu-ga reports milliseconds (/proc/stat's ticks * 1000 / USER_HZ); an offline
        # vCPU has no line in /proc/stat, so none here.
        for cpu in range(self._profile.vcpus):
            if cpu in offline:
                continue
            busy = self._counter(150_000 + cpu * 5000, 1000 * per_cpu, t)
            idle = self._counter(1_500_000 + cpu * 9000, 1000 * (1 - min(per_cpu, 0.95)), t)
            result.append(
                {
                    "cpu": cpu,
                    "guestnice": 0,
                    "idle": idle,
                    "steal": 700 + cpu * 100,
                    "iowait": 5800 + cpu * 2000,
                    "system": busy // 2,
                    "guest": 0,
                    "nice": 0,
                    "irq": 0,
                    "type": "linux",
                    "user": busy,
                    "softirq": 2900 + cpu * 800,
                }
            )
        return result


HANDLERS: dict[str, Callable[[StatsCommands, dict[str, object]], object]] = {
    "guest-get-load": StatsCommands._cmd_load,
    "guest-get-diskstats": StatsCommands._cmd_diskstats,
    "guest-get-cpustats": StatsCommands._cmd_cpustats,
}
