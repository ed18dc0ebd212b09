"""How replies become a VM's facts, typed: which member of `GuestFacts` each command fills.

`Fact[T]` names one member of `GuestFacts` and the type it holds; `Fold` pairs it with
the parser whose result goes there, and mypy checks the two agree (a parser of the wrong
type for its member does not type-check: see `_fold`). A poll's changes are collected in a
`FactsDraft` and become one new `GuestFacts`: one rebuild per poll, however many replies
changed, and none when nothing did (most polls of a quiet guest change one or two facts).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from qgadash.agent import replies
from qgadash.agent.replies import (
    AgentInfo,
    Disk,
    Filesystem,
    Interface,
    Load,
    OsInfo,
    Timezone,
    User,
)
from qgadash.fleet.live_stats import CounterRate, next_cpu, next_disks
from qgadash.fleet.model import GuestFacts

T = TypeVar("T")

_MEMBERS = tuple(f.name for f in fields(GuestFacts))
_members_of = operator.attrgetter(*_MEMBERS)


class Fact(Generic[T]):
    """One member of `GuestFacts` that holds a `T` (its annotation here must say the same
    as the dataclass's: tests/unit/fleet/polling/test_facts.py compares them)."""

    __slots__ = ("index", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.index = _MEMBERS.index(name)  # ValueError at import for a name it lacks


INFO: Fact[AgentInfo | None] = Fact("info")
OS: Fact[OsInfo | None] = Fact("os")
HOSTNAME: Fact[str | None] = Fact("hostname")
USERS: Fact[tuple[User, ...] | None] = Fact("users")
TIMEZONE: Fact[Timezone | None] = Fact("timezone")
INTERFACES: Fact[tuple[Interface, ...] | None] = Fact("interfaces")
FILESYSTEMS: Fact[tuple[Filesystem, ...] | None] = Fact("filesystems")
DISKS: Fact[tuple[Disk, ...] | None] = Fact("disks")
LOAD: Fact[Load | None] = Fact("load")
TIME_DRIFT_S: Fact[float | None] = Fact("time_drift_s")
CPU: Fact[CounterRate | None] = Fact("cpu")
DISK_IO: Fact[CounterRate | None] = Fact("disk_io")


@dataclass(frozen=True, slots=True)
class Fold(Generic[T]):
    """A reply whose parsed value depends on the reply alone, and the member it fills."""

    fact: Fact[T]
    parse: Callable[[Any], T]


def _fold(fact: Fact[T], parse: Callable[[Any], T]) -> Fold[Any]:
    # Built through this function so that mypy infers T from both arguments (in a dict
    # of Fold[Any] it would infer Any from the context and check nothing).
    return Fold(fact, parse)


# Replies that fill one member and whose parse depends on nothing else. Four more fill
# members but need more than the reply: guest-network-get-interfaces (the last poll's
# interfaces, to share unchanged addresses), guest-get-time (when the request went),
# guest-get-cpustats and guest-get-diskstats (the last poll's counters, for a rate).
FOLDS: dict[str, Fold[Any]] = {
    "guest-info": _fold(INFO, replies.parse_info),
    "guest-get-osinfo": _fold(OS, replies.parse_osinfo),
    "guest-get-host-name": _fold(HOSTNAME, replies.parse_host_name),
    "guest-get-users": _fold(USERS, replies.parse_users),
    "guest-get-timezone": _fold(TIMEZONE, replies.parse_timezone),
    "guest-get-disks": _fold(DISKS, replies.parse_disks),
    "guest-get-fsinfo": _fold(FILESYSTEMS, replies.parse_fsinfo),
    "guest-get-load": _fold(LOAD, replies.parse_load),
}


class FactsDraft:
    """A poll's changes to one VM's facts, made into one new `GuestFacts` at the end."""

    __slots__ = ("_values", "base")

    def __init__(self, base: GuestFacts) -> None:
        self.base = base
        self._values: list[Any] | None = None  # the members, copied on the first change

    def set(self, fact: Fact[T], value: T) -> None:
        if self._values is None:
            self._values = list(_members_of(self.base))
        self._values[fact.index] = value

    def result(self) -> GuestFacts:
        # Positional, not dataclasses.replace: this runs on every poll that changed a fact.
        return self.base if self._values is None else GuestFacts(*self._values)


def fold_time(draft: FactsDraft, value: Any, sent_at: float, rtt: float) -> None:
    """The guest's clock minus ours, ours taken at the middle of the round trip."""
    draft.set(TIME_DRIFT_S, replies.parse_time(value) / 1e9 - (sent_at + rtt / 2))


def fold_interfaces(draft: FactsDraft, value: Any) -> None:
    """Interfaces, sharing the addresses that did not change since the last poll."""
    draft.set(INTERFACES, replies.parse_interfaces(value, draft.base.interfaces))


def fold_cpustats(draft: FactsDraft, value: Any, at: float) -> None:
    """CPU counters read at monotonic time `at`, and the busy % since the last poll's."""
    draft.set(CPU, next_cpu(draft.base.cpu, replies.parse_cpustats(value), at))


def fold_diskstats(draft: FactsDraft, value: Any, at: float) -> None:
    """Disk counters read at monotonic time `at`, and the bytes a second since the last
    poll's."""
    draft.set(DISK_IO, next_disks(draft.base.disk_io, replies.parse_diskstats(value), at))
