"""What one poll decides, and what it must leave alone."""

from __future__ import annotations

import dataclasses

from qgadash.agent.replies import AgentInfo, CommandInfo, FreezeState
from qgadash.fleet.model import AgentState, GuestFacts, VmRef, VmSnapshot
from qgadash.fleet.poller import PollOutcome, PollPlan, commands_for


def test_a_poll_keeps_the_guards_thaw_deadline_and_error() -> None:
    ref = VmRef("hv", "vm", "/x.sock")
    before = VmSnapshot(ref, thaw_deadline=123.0, thaw_error="thaw failed: x", last_seen=5.0)
    outcome = PollOutcome(
        AgentState.TIMEOUT, "slow", None, 9.0, None, GuestFacts(), FreezeState.FROZEN
    )
    after = outcome.applied_to(before)
    assert after == dataclasses.replace(
        before, agent=AgentState.TIMEOUT, error="slow", last_poll=9.0, freeze=FreezeState.FROZEN
    )
    assert after.last_seen == 5.0  # a failed poll does not erase when we last heard from it


def test_disabled_commands_are_not_polled() -> None:
    info = AgentInfo(
        "7.2",
        (
            CommandInfo("guest-info", True, True),
            CommandInfo("guest-fsfreeze-status", True, True),
            CommandInfo("guest-network-get-interfaces", False, True),
            CommandInfo("guest-get-fsinfo", True, True),
        ),
    )
    names = commands_for(PollPlan(), GuestFacts(info=info), poll_number=1)
    assert "guest-network-get-interfaces" not in names
    assert "guest-get-load" not in names  # not offered by this agent
    assert names == ["guest-fsfreeze-status", "guest-get-fsinfo"]


def test_the_first_poll_asks_everything_and_learns_capabilities() -> None:
    names = commands_for(PollPlan(), GuestFacts(), poll_number=0)
    assert names[0] == "guest-info" and "guest-get-osinfo" in names
