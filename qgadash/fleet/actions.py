"""What can be done to VMs, and who is eligible: plans before any request is sent."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from qgadash.fleet.model import AgentState, FreezeState, VmSnapshot


class Action(enum.Enum):
    FREEZE = "freeze"
    THAW = "thaw"
    FSTRIM = "fstrim"
    SHUTDOWN = "shutdown"
    SUSPEND_RAM = "suspend-ram"
    SUSPEND_DISK = "suspend-disk"
    SUSPEND_HYBRID = "suspend-hybrid"
    EXEC = "exec"
    TIME_SYNC = "time-sync"
    PASSWORD = "password"
    SSH_KEYS_LIST = "ssh-keys list"
    SSH_KEYS_ADD = "ssh-keys add"
    SSH_KEYS_REMOVE = "ssh-keys remove"
    VCPUS = "vcpus"
    VCPUS_SET = "vcpus set"

    @property
    def command(self) -> str:
        return ACTION_COMMANDS[self]


ACTION_COMMANDS = {
    Action.FREEZE: "guest-fsfreeze-freeze",
    Action.THAW: "guest-fsfreeze-thaw",
    Action.FSTRIM: "guest-fstrim",
    Action.SHUTDOWN: "guest-shutdown",
    Action.SUSPEND_RAM: "guest-suspend-ram",
    Action.SUSPEND_DISK: "guest-suspend-disk",
    Action.SUSPEND_HYBRID: "guest-suspend-hybrid",
    Action.EXEC: "guest-exec",
    Action.TIME_SYNC: "guest-set-time",
    Action.PASSWORD: "guest-set-user-password",
    Action.SSH_KEYS_LIST: "guest-ssh-get-authorized-keys",
    Action.SSH_KEYS_ADD: "guest-ssh-add-authorized-keys",
    Action.SSH_KEYS_REMOVE: "guest-ssh-remove-authorized-keys",
    Action.VCPUS: "guest-get-vcpus",
    Action.VCPUS_SET: "guest-set-vcpus",
}

SUSPEND_ACTIONS = {
    "ram": Action.SUSPEND_RAM,
    "disk": Action.SUSPEND_DISK,
    "hybrid": Action.SUSPEND_HYBRID,
}


# Windows guests freeze through VSS, which holds writes for at most 10 s and then lets
# them go by itself (qga/vss-win32/requester.cpp): a longer deadline would show a guest
# as frozen that is not, and our thaw then "fails". Their deadline is clamped to this.
VSS_FREEZE_LIMIT = 10.0


def is_windows(snap: VmSnapshot | None) -> bool:
    return bool(snap and snap.facts.os and snap.facts.os.id == "mswindows")


def freeze_deadline(snap: VmSnapshot | None, thaw_after: float) -> float:
    """The thaw deadline (seconds) a freeze of this VM gets: `thaw_after`, at most
    VSS_FREEZE_LIMIT for a Windows guest (0, no automatic thaw, stays 0)."""
    if thaw_after > VSS_FREEZE_LIMIT and is_windows(snap):
        return VSS_FREEZE_LIMIT
    return thaw_after


class ReadOnlyError(Exception):
    """Actions are off: read_only in hosts.toml or --read-only."""


@dataclass(frozen=True, slots=True)
class ActionPlan:
    action: Action
    eligible: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (vm id, why)


def skip_reason(action: Action, snap: VmSnapshot, owned: bool) -> str | None:
    """Why `snap` cannot get `action` now, or None if it can."""
    if action is Action.THAW and owned:
        return None  # we owe this thaw; try it whatever the last poll said
    if snap.agent is not AgentState.OK:
        if snap.agent is AgentState.ERROR:
            return (
                f"agent answers nonsense: {snap.error}" if snap.error else "agent answers nonsense"
            )
        if snap.agent is AgentState.PENDING:
            return "agent not polled yet"
        return f"agent not answering ({snap.agent.value})"
    info = snap.facts.info
    command = action.command
    if info is not None:
        if not info.offers(command):
            return f"this agent has no {command}"
        frozen = snap.freeze is FreezeState.FROZEN
        if not info.enabled(command) and not (frozen and action is Action.THAW):
            return f"{command} is disabled " + (
                "while the guest is frozen" if frozen else "by the guest's policy"
            )
    if action is Action.FREEZE and snap.freeze is FreezeState.FROZEN:
        return "already frozen"
    if action is Action.THAW and snap.freeze is FreezeState.THAWED:
        return "not frozen"
    return None


def make_plan(
    action: Action, snapshots: Iterable[tuple[str, VmSnapshot | None]], owned: set[str]
) -> ActionPlan:
    eligible: list[str] = []
    skipped: list[tuple[str, str]] = []
    for vm_id, snap in snapshots:
        if snap is None:
            skipped.append((vm_id, "no such VM"))
            continue
        reason = skip_reason(action, snap, vm_id in owned)
        if reason is None:
            eligible.append(vm_id)
        else:
            skipped.append((vm_id, reason))
    return ActionPlan(action, tuple(eligible), tuple(skipped))
