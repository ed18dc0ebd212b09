"""The poll cache changes how much work a poll does, never what the poll decides.

A real `AgentClient` polls simulated agents over an in-memory stream: one fleet polled
with one engine-wide `PollCache` kept across polls, an identical twin fleet polled with a
fresh cache every time; every poll must decide the same."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from qgadash.agent.client import AgentClient
from qgadash.fleet.model import VmRef, VmSnapshot
from qgadash.fleet.polling import PollCache, PollOutcome, PollPlan, poll_with
from qgadash.sim.agent import GuestAgent
from qgadash.sim.profiles import Era, Fault, era_profile, make_profile
from tests.unit.memory_stream import MemoryStream

WALL = 1_764_000_000.0


class _Vm:
    """One simulated guest, its client and the snapshot its polls build."""

    def __init__(self, name: str, profile_index: int, era: Era | None, now: list[float]) -> None:
        profile = era_profile(era, profile_index) if era else make_profile(profile_index)
        self.agent = GuestAgent(
            profile, Fault.NONE, clock=lambda: now[0], wall=lambda: WALL + now[0]
        )
        self.client = AgentClient(MemoryStream(self.agent))
        self.snapshot = VmSnapshot(VmRef("hv", name, f"/run/{name}.sock"))


def _decided(outcome: PollOutcome) -> tuple[object, ...]:
    """What a poll decides, less what depends on how long it took."""
    facts = outcome.facts
    drift = facts.time_drift_s
    return (
        outcome.agent,
        outcome.error,
        outcome.freeze,
        facts.info,
        facts.os,
        facts.hostname,
        facts.users,
        facts.timezone,
        facts.interfaces,
        facts.filesystems,
        facts.disks,
        facts.load,
        drift is None,
        [name for name, _ in outcome.nic_samples],
    )


@settings(max_examples=25, deadline=None)
@given(
    guests=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from([None, Era.QGA_2_5, Era.QGA_7_2])),
        min_size=1,
        max_size=4,
    ),
    steps=st.lists(st.tuples(st.floats(0.0, 30.0), st.booleans()), min_size=2, max_size=8),
)
def test_a_cached_poll_decides_what_an_uncached_one_does(
    guests: list[tuple[int, Era | None]], steps: list[tuple[float, bool]]
) -> None:
    async def run() -> None:
        now = [0.0]
        cached = [_Vm(f"vm{i}", index, era, now) for i, (index, era) in enumerate(guests)]
        fresh = [_Vm(f"vm{i}", index, era, now) for i, (index, era) in enumerate(guests)]
        plan, cache = PollPlan(slow_every=3), PollCache()
        for number, (advance, freeze) in enumerate(steps):
            now[0] += advance
            if freeze:  # a frozen guest disables most commands: guest-info changes
                for vm in (*cached, *fresh):
                    vm.agent.receive(b'{"execute": "guest-fsfreeze-freeze"}\n')
            for one, twin in zip(cached, fresh, strict=True):
                a = await poll_with(
                    one.client, one.snapshot, plan, number, 5.0, cache, lambda: WALL
                )
                b = await poll_with(
                    twin.client, twin.snapshot, plan, number, 5.0, PollCache(), lambda: WALL
                )
                assert _decided(a) == _decided(b)
                one.snapshot, twin.snapshot = (
                    a.applied_to(one.snapshot),
                    b.applied_to(twin.snapshot),
                )
            if freeze:
                for vm in (*cached, *fresh):
                    vm.agent.receive(b'{"execute": "guest-fsfreeze-thaw"}\n')

    asyncio.run(run())


def test_identical_replies_across_the_fleet_are_parsed_once_and_shared() -> None:
    async def run() -> None:
        now = [0.0]
        one, two = _Vm("a", 3, None, now), _Vm("b", 3, None, now)
        cache, plan = PollCache(), PollPlan()
        first = await poll_with(one.client, one.snapshot, plan, 0, 5.0, cache)
        second = await poll_with(two.client, two.snapshot, plan, 0, 5.0, cache)
        assert first.facts.info is not None and first.facts.info is second.facts.info
        assert first.facts.timezone is not None
        assert first.facts.timezone is second.facts.timezone
        assert cache.last_replies("hv/a")["guest-info"] is cache.last_replies("hv/b")["guest-info"]

    asyncio.run(run())


def test_an_unchanged_reply_keeps_the_facts_object_and_a_forgotten_vm_is_parsed_again() -> None:
    async def run() -> None:
        now = [0.0]
        vm = _Vm("a", 1, None, now)
        cache, plan = PollCache(), PollPlan(fast=("guest-get-osinfo",), slow=(), slow_every=1000)
        snapshot = vm.snapshot
        for number in (0, 1):  # (the first reply, before the channel has ids, comes decoded)
            snapshot = (await poll_with(vm.client, snapshot, plan, number, 5.0, cache)).applied_to(
                snapshot
            )
        again = await poll_with(vm.client, snapshot, plan, 2, 5.0, cache)
        assert again.facts is snapshot.facts  # nothing parsed, nothing rebuilt
        cache.forget("hv/a")
        assert cache.last_replies("hv/a") == {}
        third = await poll_with(vm.client, snapshot, plan, 3, 5.0, cache)
        assert third.facts == snapshot.facts and third.facts is not snapshot.facts

    asyncio.run(run())


def test_the_shared_memory_is_bounded() -> None:
    cache = PollCache(shared_max=2)
    for zone in range(5):
        body = b'{"zone": "Z%d", "offset": 0}' % zone
        cache.shared("guest-get-timezone", body)
    assert len(cache._shared) == 2
