"""Which commands a poll sends, and what one poll decides and must leave alone."""

from __future__ import annotations

import dataclasses

from qgadash.agent.replies import (
    AgentInfo,
    CommandInfo,
    FreezeState,
    IpAddress,
    parse_interfaces,
)
from qgadash.fleet.model import AgentState, GuestFacts, Lifecycle, VmRef, VmSnapshot
from qgadash.fleet.polling import PollCache, PollOutcome, PollPlan


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
    names = PollCache().commands(PollPlan(), info, poll_number=1)
    assert "guest-network-get-interfaces" not in names
    assert "guest-get-load" not in names  # not offered by this agent
    assert names == ["guest-fsfreeze-status", "guest-get-fsinfo"]


def test_the_first_poll_asks_everything_and_learns_capabilities() -> None:
    names = PollCache().commands(PollPlan(), None, poll_number=0)
    assert names[0] == "guest-info" and "guest-get-osinfo" in names


def _nics(rx: int, address: str = "10.0.0.2") -> list[dict[str, object]]:
    stats = {"rx-bytes": rx, "tx-bytes": 5, "rx-packets": 1, "tx-packets": 1}
    stats |= {"rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0}
    return [
        {
            "name": "ens3",
            "hardware-address": "52:54:00:12:34:56",
            "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": address, "prefix": 24},
                {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64},
            ],
            "statistics": stats,
        }
    ]


def test_the_next_poll_reuses_unchanged_addresses_and_takes_new_counters() -> None:
    first = parse_interfaces(_nics(rx=100))
    second = parse_interfaces(_nics(rx=200), first)
    assert second[0].addresses is first[0].addresses  # shared, not rebuilt
    assert second[0].stats is not None and second[0].stats.rx_bytes == 200
    moved = parse_interfaces(_nics(rx=300, address="10.0.0.9"), second)
    assert moved[0].addresses[0] == IpAddress("10.0.0.9", 24, "ipv4")
    assert moved[0].addresses[1] is first[0].addresses[1]
    assert moved == parse_interfaces(_nics(rx=300, address="10.0.0.9"))


def test_undecoded_freeze_answers_mean_what_the_parser_says() -> None:
    import json

    from qgadash.agent.replies import FREEZE_STATUS_BODIES, parse_fsfreeze_status

    for body, state in FREEZE_STATUS_BODIES.items():
        assert parse_fsfreeze_status(json.loads(body)) is state


def test_a_poll_keeps_every_member_it_does_not_decide() -> None:
    """Every member of VmSnapshot either comes from the poll or is kept: one added to
    the snapshot and forgotten in `applied_to` fails here."""
    before = VmSnapshot(
        VmRef("hv", "vm", "/x.sock"),
        agent=AgentState.TIMEOUT,
        error="old",
        latency_ms=1.0,
        last_poll=1.0,
        last_seen=2.0,
        facts=GuestFacts(hostname="old"),
        freeze=FreezeState.THAWED,
        thaw_deadline=3.0,
        thaw_error="x",
        lifecycle=Lifecycle("reboot", 4.0, gone=True),
    )
    decided = {"agent", "error", "latency_ms", "last_poll", "last_seen", "facts", "freeze"}
    assert {f.name for f in dataclasses.fields(VmSnapshot)} - decided - {"ref"} == {
        "thaw_deadline",
        "thaw_error",
        "lifecycle",
    }
    outcome = PollOutcome(
        AgentState.OK, None, 9.0, 10.0, 10.0, GuestFacts(hostname="new"), FreezeState.FROZEN
    )
    after = outcome.applied_to(before)
    for member in ("ref", "thaw_deadline", "thaw_error", "lifecycle"):
        assert getattr(after, member) == getattr(before, member), member
    assert (after.agent, after.error, after.latency_ms, after.last_poll, after.last_seen) == (
        AgentState.OK,
        None,
        9.0,
        10.0,
        10.0,
    )
    assert after.facts.hostname == "new" and after.freeze is FreezeState.FROZEN


def test_command_lists_are_not_mixed_up_between_agents_whose_info_came_and_went() -> None:
    """The cache keys command lists by identity; an id reused by a later AgentInfo (the
    first one collected) must not give the later agent the first one's list."""
    cache, plan = PollCache(), PollPlan()
    for round_ in range(200):
        enabled = round_ % 2 == 0
        info = AgentInfo(
            "7.2",
            (
                CommandInfo("guest-info", True, True),
                CommandInfo("guest-get-load", enabled, True),
            ),
        )
        names = cache.commands(plan, info, poll_number=1)
        assert ("guest-get-load" in names) is enabled, round_
        del info
