"""One poll of one VM: which commands to send, and how their replies become a snapshot.

A poll pipelines its requests in one write. Cheap, fast-changing facts (freeze state,
interfaces, load, filesystems) are asked every poll; slow ones (guest-info, OS, users,
...) on the first poll and every `slow_every` polls after. Commands the guest has
disabled are not sent. A command error leaves that fact as it was; a reply of the wrong
shape marks the VM `error`, since the agent is then not to be believed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.codec import decode_body
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
)
from qgadash.fleet.model import AgentState, GuestFacts, VmSnapshot
from qgadash.fleet.store import CounterSample

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


def commands_for(plan: PollPlan, facts: GuestFacts, poll_number: int) -> list[str]:
    slow = facts.info is None or poll_number % plan.slow_every == 0
    info = facts.info
    # Every poll of every VM asks this; the answer only changes with guest-info.
    key = (id(plan), id(info), slow)
    cached = _commands_cache.get(key)
    if cached is not None and cached[0] is plan and cached[1] is info:
        return cached[2]
    wanted = list(plan.slow if slow else ()) + [
        c for c in plan.fast if not slow or c not in plan.slow
    ]
    if info is None:
        # The first poll asks everything: an agent without a command answers
        # CommandNotFound, which costs nothing, and a one-shot `status` of a 10.x agent
        # then has its load too. Later polls send only what guest-info offers.
        return wanted
    names = [c for c in wanted if c == "guest-info" or info.enabled(c)]
    if len(_commands_cache) >= 1024:
        _commands_cache.clear()
    _commands_cache[key] = (plan, info, names)  # holding both keeps their ids unique
    return names


# Keyed by identity (hashing an AgentInfo walks its whole command list): identical
# guest-info replies share one AgentInfo (see _apply_shared), so few entries are needed.
_commands_cache: dict[tuple[int, int, bool], tuple[PollPlan, Any, list[str]]] = {}


# Which fact each reply fills, and its parser. (guest-network-get-interfaces fills
# `interfaces` in _apply: its parser also takes the last poll's interfaces.)
_FACT_PARSERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "guest-info": ("info", replies.parse_info),
    "guest-get-osinfo": ("os", replies.parse_osinfo),
    "guest-get-host-name": ("hostname", replies.parse_host_name),
    "guest-get-users": ("users", replies.parse_users),
    "guest-get-timezone": ("timezone", replies.parse_timezone),
    "guest-get-disks": ("disks", replies.parse_disks),
    "guest-get-fsinfo": ("filesystems", replies.parse_fsinfo),
    "guest-get-load": ("load", replies.parse_load),
}


def _apply(name: str, value: Any, facts: GuestFacts, sent_at: float, rtt: float) -> GuestFacts:
    """The facts with one command's reply folded in (raises ReplyShapeError)."""
    if name == "guest-get-time":
        guest_s = replies.parse_time(value) / 1e9
        return facts.with_fact("time_drift_s", guest_s - (sent_at + rtt / 2))
    if name == "guest-network-get-interfaces":
        return facts.with_fact("interfaces", replies.parse_interfaces(value, facts.interfaces))
    fact = _FACT_PARSERS.get(name)
    if fact is None:
        return facts
    field, parse = fact
    return facts.with_fact(field, parse(value))


# Replies whose parsed form depends only on the reply (not on the time it came).
_CACHEABLE = frozenset(
    {
        "guest-info",
        "guest-get-osinfo",
        "guest-get-host-name",
        "guest-get-users",
        "guest-get-timezone",
        "guest-get-disks",
        "guest-network-get-interfaces",
        "guest-get-fsinfo",
        "guest-get-load",
    }
)


# Replies that are often identical across a fleet: parsed once and shared by every VM
# that sent the same bytes (memory, and fewer objects for the garbage collector).
_SHARED = frozenset({"guest-info", "guest-get-osinfo", "guest-get-timezone"})
_SHARED_MAX = 4096
_shared_replies: dict[tuple[str, bytes], tuple[bytes, GuestFacts]] = {}


def _apply_shared(name: str, body: bytes, facts: GuestFacts) -> tuple[bytes, GuestFacts]:
    """Fold a shareable reply in, reusing the parsed value another VM already paid for."""
    key = (name, body)
    hit = _shared_replies.get(key)
    if hit is None:
        parsed = _apply(name, decode_body(body), GuestFacts(), 0.0, 0.0)
        if len(_shared_replies) >= _SHARED_MAX:
            _shared_replies.pop(next(iter(_shared_replies)))
        hit = _shared_replies[key] = (body, parsed)
    shared_body, parsed = hit
    field = _FACT_PARSERS[name][0]
    return shared_body, facts.with_fact(field, getattr(parsed, field))


@dataclass(slots=True)
class PollOutcome:
    """The members of a snapshot that one poll decides; the rest belongs to others.

    Short-lived and never shared, so not frozen: building it is on every poll's path."""

    agent: AgentState
    error: str | None
    latency_ms: float | None
    last_poll: float
    last_seen: float | None
    facts: GuestFacts
    freeze: replies.FreezeState
    nic_samples: tuple[tuple[str, CounterSample], ...] = ()

    def applied_to(self, snapshot: VmSnapshot) -> VmSnapshot:
        # A constructor call, not dataclasses.replace: this runs for every poll of every VM.
        return VmSnapshot(
            snapshot.ref,
            self.agent,
            self.error,
            self.latency_ms,
            self.last_poll,
            self.last_seen if self.last_seen is not None else snapshot.last_seen,
            self.facts,
            self.freeze,
            snapshot.thaw_deadline,
            snapshot.thaw_error,
        )


ReplyCache = dict[str, Any]


async def poll_with(
    caller: AgentCaller,
    snapshot: VmSnapshot,
    plan: PollPlan,
    poll_number: int,
    timeout: float,
    clock: Callable[[], float] = time.time,
    cache: ReplyCache | None = None,
) -> PollOutcome:
    """Send one poll's requests over `caller` (raises AgentError if none got through).

    `cache` keeps each command's last raw reply: a reply equal to the last one (compared
    in C) is not parsed again, which is most of a poll's CPU for guest-info.
    """
    names = commands_for(plan, snapshot.facts, poll_number)
    sent_at = clock()
    started = time.perf_counter()
    raw_call = getattr(caller, "call_many_raw", None)
    requests = [(n, None) for n in names]
    if raw_call is not None:
        results = await raw_call(requests, timeout=timeout, read_only=True)
    else:
        results = await caller.call_many(requests, timeout=timeout)
    rtt = time.perf_counter() - started
    facts = snapshot.facts
    freeze = snapshot.freeze
    error: str | None = None
    state = AgentState.OK
    for name, result in zip(names, results, strict=True):
        if type(result) is not bytes and isinstance(result, AgentError):
            if isinstance(result, AgentCommandError):
                if name == "guest-fsfreeze-status":
                    freeze = replies.FreezeState.UNKNOWN
            elif isinstance(result, AgentProtocolError):
                state = AgentState.ERROR
                error = one_line(f"nonsense from the agent: {result}")
            continue
        if cache is not None and name in _CACHEABLE:
            if cache.get(name) == result:
                continue
            cache.pop(name, None)
        try:
            if name == "guest-fsfreeze-status":
                known = replies.FREEZE_STATUS_BODIES.get(result) if type(result) is bytes else None
                if known is not None:
                    freeze = known
                else:
                    value = decode_body(result) if isinstance(result, bytes) else result
                    freeze = replies.parse_fsfreeze_status(value)
            elif isinstance(result, bytes) and name in _SHARED:
                result, facts = _apply_shared(name, result, facts)
            else:
                value = decode_body(result) if isinstance(result, bytes) else result
                facts = _apply(name, value, facts, sent_at, rtt)
            if cache is not None and name in _CACHEABLE:
                cache[name] = result
        except ValueError as exc:  # undecodable JSON text
            state = AgentState.ERROR
            error = one_line(f"nonsense from the agent: {exc}")
        except AgentProtocolError as exc:
            state = AgentState.ERROR
            error = one_line(f"nonsense from the agent: {exc}")
    nic_samples: list[tuple[str, CounterSample]] = []
    if "guest-network-get-interfaces" in names and state is AgentState.OK:
        now = time.monotonic()
        for iface in facts.interfaces or ():
            if iface.stats is not None:
                nic_samples.append(
                    (iface.name, CounterSample(now, iface.stats.rx_bytes, iface.stats.tx_bytes))
                )
    return PollOutcome(
        state, error, rtt * 1000, sent_at, sent_at, facts, freeze, tuple(nic_samples)
    )


def failed_outcome(
    snapshot: VmSnapshot, exc: AgentError, clock: Callable[[], float]
) -> PollOutcome:
    """What a poll that got no usable answer decides."""
    if isinstance(exc, AgentTimeout):
        state = AgentState.TIMEOUT
    elif isinstance(exc, AgentConnectionError):
        state = AgentState.UNREACHABLE
    else:
        state = AgentState.ERROR
    return PollOutcome(
        state, one_line(str(exc)), None, clock(), None, snapshot.facts, snapshot.freeze
    )


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
