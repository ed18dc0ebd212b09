"""Guest administration against the real qemu-ga 7.2, read-only (every command that
changes the machine is blocked, realagent.py): vCPUs, CPU and disk counters, a user's
SSH keys; the changing verbs are skipped with the agent's reason; and the simulator's
texts for these commands are the real agent's."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from qgadash.fleet.actions import Action
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.live_stats import StatsSampler
from qgadash.sim.agent import GuestAgent
from qgadash.sim.profiles import make_profile
from tests.integration.realagent import RealAgent
from tests.integration.test_real_agent import hosts_for

pytestmark = pytest.mark.real_agent


@pytest.fixture
def agents(real_agent_factory) -> list[RealAgent]:  # type: ignore[no-untyped-def]
    started: list[RealAgent] = real_agent_factory(2, ["alpha", "beta"])
    return started


def raw(agent: RealAgent, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One request on the real agent's socket, no qgadash code in between."""
    request: dict[str, Any] = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(agent.socket))
        with s.makefile("rwb") as f:
            f.write(json.dumps(request).encode() + b"\n")
            f.flush()
            return json.loads(f.readline())


async def test_vcpus_and_live_stats_from_the_real_agent(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        await engine.poll_once()
        ids = sorted(s.id for s in engine.store.snapshots())
        shown = await engine.admin.vcpus(ids)
        assert all(r.ok for r in shown), shown
        online = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        for r in shown:
            assert r.value["total"] >= r.value["online"] >= 1
            if online is not None:
                assert r.value["online"] >= online
        sampler = StatsSampler(engine, ids[0])
        assert await sampler.sample() is None
        stats = None
        for _ in range(200):  # until this machine's counters move (ms resolution)
            await asyncio.sleep(0.05)
            stats = await sampler.sample()
            if stats is not None and stats.cpu_percent is not None:
                break
        assert stats is not None and stats.cpu_percent is not None
        assert 0.0 <= stats.cpu_percent <= 100.0
        assert sampler.has_cpu and sampler.has_disks
        assert all(v >= 0 for v in stats.disk_read_bps.values())
    finally:
        await engine.stop()


async def test_changing_verbs_are_skipped_with_the_agents_reason(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        await engine.poll_once()
        ids = sorted(s.id for s in engine.store.snapshots())
        for action in (
            Action.TIME_SYNC,
            Action.PASSWORD,
            Action.VCPUS_SET,
            Action.SSH_KEYS_ADD,
            Action.SSH_KEYS_REMOVE,
        ):
            plan = engine.plan(action, ids)
            assert plan.eligible == (), action
            assert {why for _, why in plan.skipped} == {
                f"{action.command} is disabled by the guest's policy"
            }
        for action in (Action.VCPUS, Action.SSH_KEYS_LIST):
            assert engine.plan(action, ids).eligible == tuple(ids)
    finally:
        await engine.stop()


async def test_ssh_keys_of_a_user_read_from_the_real_agent(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    import pwd

    me = pwd.getpwuid(os.getuid())
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        await engine.poll_once()
        ids = sorted(s.id for s in engine.store.snapshots())
        listed = await engine.admin.ssh_keys(ids, me.pw_name)
        assert all(r.ok for r in listed), listed
        path = Path(me.pw_dir) / ".ssh" / "authorized_keys"
        if not path.exists():  # no file: no keys (the agent's read error is not a failure)
            assert [r.value for r in listed] == [[], []]
        else:
            assert all(isinstance(r.value, list) for r in listed)
        unknown = await engine.admin.ssh_keys(ids[:1], "no-such-user-qgadash")
        assert unknown[0].ok is False
        assert "failed to lookup user 'no-such-user-qgadash'" in (unknown[0].error or "")
    finally:
        await engine.stop()


def test_the_simulator_answers_these_commands_as_the_real_agent(
    agents: list[RealAgent],
) -> None:
    sim = GuestAgent(make_profile(0))

    def sim_raw(command: str, arguments: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        (out,) = [o for o in sim.receive(json.dumps(request).encode()) if isinstance(o, bytes)]
        return json.loads(out)

    user = {"username": "no-such-user-qgadash"}
    assert raw(agents[0], "guest-ssh-get-authorized-keys", user) == sim_raw(
        "guest-ssh-get-authorized-keys", user
    )
    for command in ("guest-get-vcpus", "guest-get-cpustats", "guest-get-diskstats"):
        real, simulated = raw(agents[0], command)["return"], sim_raw(command)["return"]
        assert real and simulated
        assert list(real[0]) == list(simulated[0]), command  # members, in the same order
    if not Path("/root/.ssh/authorized_keys").exists() and os.getuid() == 0:
        root = {"username": "root"}
        assert raw(agents[0], "guest-ssh-get-authorized-keys", root) == sim_raw(
            "guest-ssh-get-authorized-keys", root
        )


async def test_the_details_admin_view_reads_the_real_agent(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    """What the details' Admin tab shows, from the real qemu-ga: its vCPUs, and the keys
    of this machine's user (asked for) and of root, in one pipelined read."""
    import pwd

    from qgadash.fleet.admin_view import key_users

    me = pwd.getpwuid(os.getuid()).pw_name
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        await engine.poll_once()
        vm_id = sorted(s.id for s in engine.store.snapshots())[0]
        snap = engine.store.get(vm_id)
        view = await engine.admin.view(snap, vm_id, key_users(snap, [me]))
        assert view.vcpus_note is None and view.keys_note is None
        assert view.vcpus and sum(c.online for c in view.vcpus) >= 1
        by_user = {u.user: u for u in view.users}
        assert by_user[me].error is None  # keys, or none (no authorized_keys file)
        assert "root" in by_user
    finally:
        await engine.stop()


async def test_fleet_columns_poll_the_real_agents_counters(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    """With the CPU% / DISK I/O columns on, every poll asks the real qemu-ga 7.2 for its
    counters, and two polls make a rate."""
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        await engine.poll_once()
        ids = sorted(s.id for s in engine.store.snapshots())
        assert all(engine.store.get(i).facts.cpu is None for i in ids)  # type: ignore[union-attr]
        engine.poll_stats(cpu=True, disks=True)
        cpu = None
        for _ in range(200):  # until this machine's counters move (ms resolution)
            await engine.poll_vms(ids)
            snap = engine.store.get(ids[0])
            assert snap is not None and snap.facts.cpu is not None
            cpu = snap.facts.cpu.cpu_percent
            if cpu is not None:
                break
            await asyncio.sleep(0.05)
        assert cpu is not None and 0.0 <= cpu <= 100.0
        disk = engine.store.get(ids[0]).facts.disk_io  # type: ignore[union-attr]
        assert disk is not None and disk.rate is not None
        assert all(v >= 0 for v in disk.rate.disk_read_bps.values())
    finally:
        await engine.stop()
