"""Who may get an action: the plan made before any request is sent, and each reason a VM
is left out (shown to the operator as "skipped: ...")."""

from __future__ import annotations

import pytest

from qgadash.agent.replies import AgentInfo, CommandInfo
from qgadash.fleet.actions import (
    ACTION_COMMANDS,
    SUSPEND_ACTIONS,
    Action,
    ActionPlan,
    make_plan,
    skip_reason,
)
from qgadash.fleet.model import AgentState, FreezeState, GuestFacts, VmRef, VmSnapshot

REF = VmRef("hv", "vm", "/run/vm.sock")
EVERY = tuple(ACTION_COMMANDS.values())


def info(offered: tuple[str, ...] = EVERY, disabled: tuple[str, ...] = ()) -> AgentInfo:
    return AgentInfo("9.2.0", tuple(CommandInfo(c, c not in disabled, True) for c in offered))


def snap(
    agent: AgentState = AgentState.OK,
    freeze: FreezeState = FreezeState.THAWED,
    agent_info: AgentInfo | None = None,
    error: str | None = None,
) -> VmSnapshot:
    return VmSnapshot(REF, agent, error, freeze=freeze, facts=GuestFacts(info=agent_info))


def test_every_action_names_its_agent_command() -> None:
    assert Action.FREEZE.command == "guest-fsfreeze-freeze"
    assert Action.THAW.command == "guest-fsfreeze-thaw"
    assert Action.EXEC.command == "guest-exec"
    assert {a.command for a in Action} == set(ACTION_COMMANDS.values())
    assert SUSPEND_ACTIONS["disk"].command == "guest-suspend-disk"


def test_a_healthy_vm_is_eligible_for_what_its_agent_offers() -> None:
    for action in Action:
        state = FreezeState.FROZEN if action is Action.THAW else FreezeState.THAWED
        assert skip_reason(action, snap(freeze=state, agent_info=info()), False) is None


def test_an_agent_that_does_not_answer_is_skipped_with_its_state() -> None:
    assert skip_reason(Action.FREEZE, snap(AgentState.TIMEOUT), False) == (
        "agent not answering (timeout)"
    )
    assert skip_reason(Action.FREEZE, snap(AgentState.PENDING), False) == "agent not polled yet"
    assert skip_reason(Action.FREEZE, snap(AgentState.ERROR), False) == "agent answers nonsense"
    assert skip_reason(Action.FREEZE, snap(AgentState.ERROR, error="bad json"), False) == (
        "agent answers nonsense: bad json"
    )


def test_an_owed_thaw_is_tried_whatever_the_last_poll_said() -> None:
    assert skip_reason(Action.THAW, snap(AgentState.TIMEOUT), True) is None
    assert skip_reason(Action.THAW, snap(AgentState.TIMEOUT), False) is not None
    assert skip_reason(Action.FREEZE, snap(AgentState.TIMEOUT), True) is not None


def test_a_command_the_agent_lacks_or_disables_is_skipped_and_why() -> None:
    lacking = info(offered=("guest-fsfreeze-thaw",))
    assert skip_reason(Action.FREEZE, snap(agent_info=lacking), False) == (
        "this agent has no guest-fsfreeze-freeze"
    )
    disabled = info(disabled=("guest-exec",))
    assert skip_reason(Action.EXEC, snap(agent_info=disabled), False) == (
        "guest-exec is disabled by the guest's policy"
    )
    assert skip_reason(
        Action.EXEC, snap(freeze=FreezeState.FROZEN, agent_info=disabled), False
    ) == ("guest-exec is disabled while the guest is frozen")


def test_a_frozen_guest_may_be_thawed_though_its_agent_lists_thaw_disabled() -> None:
    odd = info(disabled=("guest-fsfreeze-thaw",))
    assert skip_reason(Action.THAW, snap(freeze=FreezeState.FROZEN, agent_info=odd), False) is None
    assert skip_reason(Action.THAW, snap(agent_info=odd), False) == (
        "guest-fsfreeze-thaw is disabled by the guest's policy"
    )


def test_freeze_skips_a_frozen_guest_and_thaw_a_thawed_one() -> None:
    assert skip_reason(Action.FREEZE, snap(freeze=FreezeState.FROZEN), False) == "already frozen"
    assert skip_reason(Action.THAW, snap(freeze=FreezeState.THAWED), False) == "not frozen"
    assert skip_reason(Action.THAW, snap(freeze=FreezeState.UNKNOWN), False) is None
    assert skip_reason(Action.FREEZE, snap(freeze=FreezeState.UNKNOWN), False) is None


@pytest.mark.parametrize("owned", [set(), {"hv/b"}])
def test_a_plan_keeps_the_order_and_says_why_each_skipped_vm_is_out(owned: set[str]) -> None:
    plan = make_plan(
        Action.THAW,
        [
            ("hv/a", snap(freeze=FreezeState.FROZEN)),
            ("hv/b", snap(AgentState.TIMEOUT)),
            ("hv/c", None),
            ("hv/d", snap(freeze=FreezeState.FROZEN)),
        ],
        owned,
    )
    if owned:
        assert plan == ActionPlan(Action.THAW, ("hv/a", "hv/b", "hv/d"), (("hv/c", "no such VM"),))
    else:
        assert plan == ActionPlan(
            Action.THAW,
            ("hv/a", "hv/d"),
            (("hv/b", "agent not answering (timeout)"), ("hv/c", "no such VM")),
        )
