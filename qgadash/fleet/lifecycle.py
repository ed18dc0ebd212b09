"""Power actions this process sent, carried through polls until the VM is back.

A VM that was shut down, suspended or rebooted from here stops answering on purpose:
its row stays, with what was done and when, instead of vanishing (its socket goes
away) or looking like a fault (a silent agent). `after_poll` is the whole rule.
"""

from __future__ import annotations

import dataclasses

from qgadash.fleet.model import POWER_ACTIONS, AgentState, Lifecycle, VmSnapshot

__all__ = [
    "IGNORED_AFTER",
    "MANAGER_STATES",
    "REBOOTED_AFTER",
    "after_poll",
    "power_action",
    "with_manager_state",
]

# Seconds an agent may go on answering after a power action before the action counts
# as ignored (a guest that refused to shut down): the row is then an ordinary one again.
IGNORED_AFTER = 120.0
# A reboot can be over between two polls (no poll saw the agent away): an answer this
# long after the request means it is back.
REBOOTED_AFTER = 15.0


def power_action(command: str, arguments: object) -> str | None:
    """The lifecycle action a successful agent command starts, if any."""
    if command == "guest-shutdown":
        mode = arguments.get("mode", "powerdown") if isinstance(arguments, dict) else "powerdown"
        return mode if mode in POWER_ACTIONS else None
    if command.startswith("guest-suspend-"):
        action = command.removeprefix("guest-")
        return action if action in POWER_ACTIONS else None
    return None


def after_poll(polled: VmSnapshot, lifecycle: Lifecycle | None, now: float) -> VmSnapshot:
    """The snapshot a poll produced, read in the light of a power action sent earlier.

    No answer: the expected state of that action (`stopped`, `suspended`, `rebooting`),
    and the action is marked as taken effect. An answer after that: the VM is back and
    the lifecycle ends; an answer before it, past IGNORED_AFTER: the guest ignored it.
    """
    if lifecycle is None:
        return polled if polled.lifecycle is None else dataclasses.replace(polled, lifecycle=None)
    if polled.agent is AgentState.OK:
        patience = REBOOTED_AFTER if lifecycle.action == "reboot" else IGNORED_AFTER
        if lifecycle.gone or now - lifecycle.since > patience:
            return dataclasses.replace(polled, lifecycle=None)
        return dataclasses.replace(polled, lifecycle=lifecycle)
    gone = lifecycle if lifecycle.gone else dataclasses.replace(lifecycle, gone=True)
    return dataclasses.replace(polled, agent=lifecycle.state, lifecycle=gone)


# A manager's states (libvirt's domain states, Proxmox's "stopped") that say why an
# agent cannot answer, as agent.state values (contracts.md): the row then says what the
# manager says, not "unreachable".
MANAGER_STATES: dict[str, AgentState] = {
    "paused": AgentState.SUSPENDED,
    "pmsuspended": AgentState.SUSPENDED,
    "shut off": AgentState.STOPPED,
    "crashed": AgentState.ERROR,
    "dying": AgentState.STOPPED,
    "stopped": AgentState.STOPPED,
}
MANAGER_PREFIX = "libvirt: "


def with_manager_state(
    snapshot: VmSnapshot, state: str | None, manager: str = "libvirt"
) -> VmSnapshot:
    """The snapshot in the light of the domain's state as its manager reports it.

    Paused, suspended, shut off or crashed: the agent state says so (and `error` names the
    manager's word) whatever the last poll found. Running again after such a state: the
    agent state is `pending` until the next poll, not the stale "suspended".
    """
    prefix = f"{manager}: "
    agent = MANAGER_STATES.get(state) if state is not None else None
    if agent is not None:
        error = f"{prefix}{state}"
        if snapshot.agent is agent and snapshot.error == error:
            return snapshot
        return dataclasses.replace(snapshot, agent=agent, error=error)
    if state is not None and (snapshot.error or "").startswith(prefix):
        return dataclasses.replace(snapshot, agent=AgentState.PENDING, error=None)
    return snapshot
