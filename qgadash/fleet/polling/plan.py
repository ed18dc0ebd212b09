"""Which commands a poll sends: cheap, fast-changing facts every poll, slow ones now and then.

Fast (freeze state, interfaces, load, filesystems) are asked every poll; slow ones
(guest-info, OS, users, ...) on the first poll and every `slow_every` polls after.
Commands the guest has disabled, or its agent does not offer, are not sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qgadash.agent.replies import AgentInfo

FAST_COMMANDS = (
    "guest-fsfreeze-status",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-load",
)
SLOW_COMMANDS = (
    "guest-info",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-time",
    "guest-get-disks",
)
# Asked on every poll only while the fleet table shows CPU % / DISK I/O (`with_stats`).
CPU_STATS = "guest-get-cpustats"
DISK_STATS = "guest-get-diskstats"
# The three requests the benchmarks' floor client sends: a like-for-like plan.
BENCH_COMMANDS = ("guest-info", "guest-fsfreeze-status", "guest-network-get-interfaces")


@dataclass(frozen=True, slots=True)
class PollPlan:
    fast: tuple[str, ...] = FAST_COMMANDS
    slow: tuple[str, ...] = SLOW_COMMANDS
    slow_every: int = 6

    def with_stats(self, *, cpu: bool, disks: bool) -> PollPlan:
        """This plan with the CPU and disk counters asked on every poll, or not (a rate
        needs the counters of each poll; fleet/live_stats.py turns two into one)."""
        fast = tuple(c for c in self.fast if c not in (CPU_STATS, DISK_STATS))
        fast += tuple(c for c, on in ((CPU_STATS, cpu), (DISK_STATS, disks)) if on)
        return replace(self, fast=fast)

    def is_slow(self, info: AgentInfo | None, poll_number: int) -> bool:
        """Whether this poll asks the slow facts too (always, until guest-info is known)."""
        return info is None or poll_number % self.slow_every == 0

    def commands(self, info: AgentInfo | None, slow: bool) -> list[str]:
        """The commands of a poll, in the order they are sent.

        Before guest-info is known the poll asks everything: an agent without a command
        answers CommandNotFound, which costs nothing, and a one-shot `status` of a 10.x
        agent then has its load too. Later polls send only what guest-info offers.
        """
        wanted = list(self.slow if slow else ()) + [
            c for c in self.fast if not slow or c not in self.slow
        ]
        if info is None:
            return wanted
        return [c for c in wanted if c == "guest-info" or info.enabled(c)]
