"""One poll of one VM: its requests in one write, and how the replies become a snapshot.

A command error leaves that fact as it was; a reply of the wrong shape marks the VM
`error`, since the agent is then not to be believed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
from qgadash.fleet.polling.cache import REMEMBERED, SHARED, PollCache
from qgadash.fleet.polling.facts import (
    FOLDS,
    FactsDraft,
    fold_cpustats,
    fold_diskstats,
    fold_interfaces,
    fold_time,
)
from qgadash.fleet.polling.plan import PollPlan
from qgadash.fleet.sanitize import one_line
from qgadash.fleet.store import CounterSample


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
        # A constructor call, not dataclasses.replace: this runs for every poll of every
        # VM. Every member is passed (a new one breaks this call, not silently defaults):
        # tests/unit/fleet/polling/test_poll.py checks the others are kept.
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
            snapshot.lifecycle,
        )


async def poll_with(
    caller: AgentCaller,
    snapshot: VmSnapshot,
    plan: PollPlan,
    poll_number: int,
    timeout: float,
    cache: PollCache,
    clock: Callable[[], float] = time.time,
) -> PollOutcome:
    """Send one poll's requests over `caller` (raises AgentError if none got through).

    `snapshot` must be the one the last poll of this VM stored: the cache's memory of
    its replies vouches for those facts.
    """
    names = cache.commands(plan, snapshot.facts.info, poll_number)
    last = cache.last_replies(snapshot.ref.id)
    sent_at = clock()
    started = time.perf_counter()
    results = await caller.call_many_raw(
        [(n, None) for n in names], timeout=timeout, read_only=True
    )
    rtt = time.perf_counter() - started
    draft = FactsDraft(snapshot.facts)
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
        remembered = name in REMEMBERED
        if remembered and last.get(name) == result:
            continue  # the same bytes as last time: the facts already say it
        try:
            if name == "guest-fsfreeze-status":
                known = replies.FREEZE_STATUS_BODIES.get(result) if type(result) is bytes else None
                if known is not None:
                    freeze = known
                else:
                    value = decode_body(result) if type(result) is bytes else result
                    freeze = replies.parse_fsfreeze_status(value)
            elif type(result) is bytes and name in SHARED:
                result, parsed = cache.shared(name, result)
                draft.set(FOLDS[name].fact, parsed)
            else:
                value = decode_body(result) if type(result) is bytes else result
                fold = FOLDS.get(name)
                if fold is not None:
                    draft.set(fold.fact, fold.parse(value))
                elif name == "guest-network-get-interfaces":
                    fold_interfaces(draft, value)
                elif name == "guest-get-time":
                    fold_time(draft, value, sent_at, rtt)
                elif name == "guest-get-cpustats":
                    fold_cpustats(draft, value, started + rtt / 2)
                elif name == "guest-get-diskstats":
                    fold_diskstats(draft, value, started + rtt / 2)
            if remembered:
                last[name] = result
        except ValueError as exc:  # undecodable JSON text
            state = AgentState.ERROR
            error = one_line(f"nonsense from the agent: {exc}")
        except AgentProtocolError as exc:
            state = AgentState.ERROR
            error = one_line(f"nonsense from the agent: {exc}")
    facts = draft.result()
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
