"""Which commands a poll sends: cheap, fast-changing facts every poll, slow ones now and then.

Fast (freeze state, interfaces, load, filesystems) are asked every poll; slow ones
(guest-info, OS, users, ...) on the first poll and every `slow_every` polls after.
Commands the guest has disabled, or its agent does not offer, are not sent.
"""

from __future__ import annotations

from dataclasses import dataclass

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
# The three requests the benchmarks' floor client sends: a like-for-like plan.
BENCH_COMMANDS = ("guest-info", "guest-fsfreeze-status", "guest-network-get-interfaces")


@dataclass(frozen=True, slots=True)
class PollPlan:
    fast: tuple[str, ...] = FAST_COMMANDS
    slow: tuple[str, ...] = SLOW_COMMANDS
    slow_every: int = 6

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
