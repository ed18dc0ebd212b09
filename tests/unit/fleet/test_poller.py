"""What one poll decides, and what it must leave alone."""

from __future__ import annotations

import dataclasses

from qgadash.agent.replies import (
    AgentInfo,
    CommandInfo,
    FreezeState,
    IpAddress,
    parse_interfaces,
)
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
