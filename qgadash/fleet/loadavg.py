"""The load averages of `qgadash status`, also for agents before qemu-ga 10.0.

guest-get-load came with qemu-ga 10.0 and the one-shot status asks it on its poll. For
an older Linux agent the same three numbers are one small file away: /proc/loadavg,
read with guest-file-open (mode "r"), one guest-file-read of at most READ_BYTES and
guest-file-close, all read-only in the command policy (agent/policy.py: opening for
reading does not change the guest, so --read-only allows it). Nothing else is read, and
only when guest-get-load is missing from the agent: an agent that has it but disabled
it keeps it disabled (its owner chose that; reading the file instead would go around
them). Windows has no load average. Every VM without a load gets the reason instead.
(The guest's qemu-ga logs each guest-file-open, path and mode, in its own log.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentError
from qgadash.fleet.actions import is_windows
from qgadash.fleet.live_stats import AgentAccess
from qgadash.fleet.model import AgentState, FreezeState, VmSnapshot

LOADAVG_PATH = "/proc/loadavg"
# "0.52 0.58 0.59 2/345 12345\n": well under 64 bytes; a longer reply is refused.
READ_BYTES = 128
FILE_COMMANDS = ("guest-file-open", "guest-file-read", "guest-file-close")
FROM_AGENT = "guest-get-load"


@dataclass(frozen=True, slots=True)
class StatusLoad:
    """One VM's load for `status`: the averages and where they came from, or why none."""

    load: replies.Load | None
    source: str | None  # FROM_AGENT or LOADAVG_PATH
    note: str | None  # why there is no load


def parse_loadavg(data: bytes) -> replies.Load:
    """The first three fields of /proc/loadavg (ValueError on anything else)."""
    fields = data.decode("ascii").split()
    if len(fields) < 3:
        raise ValueError(f"{LOADAVG_PATH}: expected three load averages")
    values = [float(f) for f in fields[:3]]
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{LOADAVG_PATH}: expected non-negative numbers")
    return replies.Load(*values)


def file_load_refusal(snap: VmSnapshot) -> str | None:
    """Why the load of this polled VM (which has none) is not read from /proc/loadavg,
    or None when it may be."""
    if snap.agent is not AgentState.OK:
        return f"agent not answering ({snap.agent.value})"
    if is_windows(snap):
        return "Windows has no load average"
    info = snap.facts.info
    if info is None:
        return "the agent did not answer guest-info"
    if info.offers(FROM_AGENT):
        if not info.enabled(FROM_AGENT):
            return f"{FROM_AGENT} is disabled by the guest's policy"
        return f"{FROM_AGENT} gave no answer"
    for command in FILE_COMMANDS:
        if not info.offers(command):
            return f"this agent has no {FROM_AGENT} and no {command}"
        if not info.enabled(command):
            why = (
                "while the guest is frozen"
                if snap.freeze is FreezeState.FROZEN
                else "by the guest's policy"
            )
            return (
                f"this agent has no {FROM_AGENT}, and {command} "
                f"(to read {LOADAVG_PATH}) is disabled {why}"
            )
    return None


async def read_loadavg(caller: AgentCaller, timeout: float) -> replies.Load:
    """Open, read (once, at most READ_BYTES) and close /proc/loadavg."""
    handle = replies.parse_file_handle(
        await caller.call("guest-file-open", {"path": LOADAVG_PATH, "mode": "r"}, timeout=timeout)
    )
    try:
        value = await caller.call(
            "guest-file-read", {"handle": handle, "count": READ_BYTES}, timeout=timeout
        )
        chunk = replies.parse_file_read(value, READ_BYTES)
    finally:
        with contextlib.suppress(AgentError):
            await caller.call("guest-file-close", {"handle": handle}, timeout=timeout)
    return parse_loadavg(chunk.data)


async def status_loads(
    access: AgentAccess, snapshots: Sequence[VmSnapshot], limit: int
) -> dict[str, StatusLoad]:
    """Each polled VM's load: from its poll when it has one, else from /proc/loadavg when
    allowed (at most `limit` VMs at once), else why not."""
    out: dict[str, StatusLoad] = {}
    wanted: list[VmSnapshot] = []
    for snap in snapshots:
        if snap.facts.load is not None:
            out[snap.id] = StatusLoad(snap.facts.load, FROM_AGENT, None)
        elif (why := file_load_refusal(snap)) is not None:
            out[snap.id] = StatusLoad(None, None, why)
        else:
            wanted.append(snap)
    gate = asyncio.Semaphore(max(1, limit))
    timeout = access.action_timeout

    async def one(vm_id: str) -> StatusLoad:
        async with gate:
            try:
                load = await access.with_agent(vm_id, lambda c: read_loadavg(c, timeout))
            except AgentError as exc:
                return StatusLoad(None, None, f"reading {LOADAVG_PATH} failed: {exc}")
            except ValueError as exc:  # not three numbers in ASCII
                return StatusLoad(None, None, f"nonsense from the agent: {exc}")
        return StatusLoad(load, LOADAVG_PATH, None)

    found = await asyncio.gather(*(one(s.id) for s in wanted))
    out.update((s.id, result) for s, result in zip(wanted, found, strict=True))
    return {s.id: out[s.id] for s in snapshots}
