"""The lifecycle rule of a power action, on plain snapshots."""

from __future__ import annotations

import dataclasses

from qgadash.fleet.lifecycle import IGNORED_AFTER, REBOOTED_AFTER, after_poll, power_action
from qgadash.fleet.model import AgentState, Lifecycle, VmRef, VmSnapshot

REF = VmRef("hv1", "web-1", "/run/qga/web-1.sock")


def polled(state: AgentState) -> VmSnapshot:
    return VmSnapshot(REF, state, None if state is AgentState.OK else "no reply within 3 s")


def test_power_action_of_commands() -> None:
    assert power_action("guest-shutdown", None) == "powerdown"
    assert power_action("guest-shutdown", {"mode": "reboot"}) == "reboot"
    assert power_action("guest-shutdown", {"mode": "bogus"}) is None
    assert power_action("guest-suspend-disk", None) == "suspend-disk"
    assert power_action("guest-ping", None) is None


def test_silence_after_a_power_action_is_its_state_and_an_answer_then_ends_it() -> None:
    sent = Lifecycle("powerdown", 100.0)
    quiet = after_poll(polled(AgentState.UNREACHABLE), sent, 105.0)
    assert quiet.agent is AgentState.STOPPED and quiet.error
    assert quiet.lifecycle == dataclasses.replace(sent, gone=True)
    back = after_poll(polled(AgentState.OK), quiet.lifecycle, 200.0)
    assert back.agent is AgentState.OK and back.lifecycle is None


def test_answers_before_the_guest_went_quiet_keep_the_action_until_it_counts_as_ignored() -> None:
    sent = Lifecycle("suspend-ram", 100.0)
    still = after_poll(polled(AgentState.OK), sent, 101.0)
    assert still.agent is AgentState.OK and still.lifecycle == sent
    ignored = after_poll(polled(AgentState.OK), sent, 100.0 + IGNORED_AFTER + 1)
    assert ignored.lifecycle is None


def test_no_action_leaves_the_poll_alone() -> None:
    snap = polled(AgentState.TIMEOUT)
    assert after_poll(snap, None, 1.0) is snap


def test_a_reboot_over_between_two_polls_ends_after_a_short_while() -> None:
    sent = Lifecycle("reboot", 100.0)
    assert after_poll(polled(AgentState.OK), sent, 105.0).lifecycle == sent  # rebooting…
    back = after_poll(polled(AgentState.OK), sent, 100.0 + REBOOTED_AFTER + 1)
    assert back.lifecycle is None
    assert after_poll(polled(AgentState.TIMEOUT), sent, 106.0).agent is AgentState.REBOOTING
