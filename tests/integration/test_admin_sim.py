"""Guest administration on a selection, against simulated agents: the clock, passwords,
SSH keys, vCPUs and live stats; skipped with a reason where the agent lacks the command,
audited with nothing secret in the record."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.fleet.actions import Action, ReadOnlyError
from qgadash.fleet.admin import Secret
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.live_stats import StatsSampler
from qgadash.sim import SimFleet, SimVm, make_profile

PASSWORD = "Tr0ub4dor&3-unique"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAA alice@laptop"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBB bob@laptop"


def _linux(i: int, version: str | None = None) -> SimVm:
    profile = next(make_profile(j) for j in range(i, i + 40) if not make_profile(j).windows)
    profile = dataclasses.replace(profile, vcpus=4)
    if version is not None:
        profile = dataclasses.replace(profile, agent_version=version)
    return SimVm(f"vm{i}", profile)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    # vm0, vm1: qemu-ga 7.2; vm2: 5.1 (no SSH key commands, no cpustats/diskstats).
    vms = [_linux(0), _linux(1), _linux(2, "5.1.0")]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        yield sim


@pytest.fixture
async def engine(fleet: SimFleet, tmp_path: Path) -> AsyncIterator[FleetEngine]:
    hosts = tmp_path / "hosts.toml"
    fleet.write_hosts_toml(hosts, hypervisor="sim", timeout=2.0, poll_interval=0.5)
    eng = FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "audit.jsonl"))
    try:
        await eng.poll_once()
        yield eng
    finally:
        await eng.stop()


IDS = ["sim/vm0", "sim/vm1", "sim/vm2"]


async def test_time_sync_shows_drift_before_and_after(engine: FleetEngine, fleet: SimFleet) -> None:
    ahead = int((1_900_000_000) * 1e9)  # the operator's time: far ahead
    results = await engine.admin.time_sync(["sim/vm0"], when_ns=ahead)
    assert results[0].ok, results
    assert results[0].value["drift_after_s"] > 1e8
    synced = await engine.admin.time_sync(["sim/vm0", "sim/vm1"])
    assert all(r.ok for r in synced), synced
    first = synced[0].value
    assert first["drift_before_s"] > 1e8 and abs(first["drift_after_s"]) < 5


async def test_password_is_set_and_never_in_the_audit(engine: FleetEngine, tmp_path: Path) -> None:
    results = await engine.admin.set_password(IDS, "root", Secret(PASSWORD))
    assert [r.ok for r in results] == [True, True, True]
    unknown = await engine.admin.set_password(["sim/vm0"], "no-such-user", Secret(PASSWORD))
    assert unknown[0].ok is False
    assert "failed to set user password" in (unknown[0].error or "")
    audit = (tmp_path / "audit.jsonl").read_text()
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    assert PASSWORD not in audit and encoded not in audit
    records = [json.loads(line) for line in audit.splitlines()]
    assert {r["action"] for r in records} == {"password"}
    assert records[0]["arguments"]["username"] == "root"
    assert repr(Secret(PASSWORD)) == "Secret('***')" and PASSWORD not in str(Secret(PASSWORD))


async def test_ssh_keys_listed_added_and_removed_with_the_diff(engine: FleetEngine) -> None:
    plan = engine.plan(Action.SSH_KEYS_ADD, IDS)
    assert plan.eligible == ("sim/vm0", "sim/vm1")
    assert plan.skipped == (("sim/vm2", "this agent has no guest-ssh-add-authorized-keys"),)
    listed = await engine.admin.ssh_keys(plan.eligible, "root")
    assert [r.value for r in listed] == [[], []]  # no authorized_keys yet: no keys
    added = await engine.admin.ssh_keys_change(["sim/vm0"], "root", [KEY_A], remove=False)
    assert added[0].value == {"added": [KEY_A], "removed": []}
    again = await engine.admin.ssh_keys_change(plan.eligible, "root", [KEY_A, KEY_B], remove=False)
    assert [r.value for r in again] == [
        {"added": [KEY_B], "removed": []},
        {"added": [KEY_A, KEY_B], "removed": []},
    ]
    removed = await engine.admin.ssh_keys_change(plan.eligible, "root", [KEY_A], remove=True)
    assert [r.value["removed"] for r in removed] == [[KEY_A], [KEY_A]]
    listed = await engine.admin.ssh_keys(plan.eligible, "root")
    assert [r.value for r in listed] == [[KEY_B], [KEY_B]]


async def test_vcpus_shown_and_set(engine: FleetEngine) -> None:
    shown = await engine.admin.vcpus(["sim/vm0"])
    assert shown[0].value == {"online": 4, "offline": 0, "total": 4, "offline_ids": []}
    two = await engine.admin.set_vcpus(["sim/vm0", "sim/vm1"], 2)
    assert [r.value["online"] for r in two] == [2, 2]
    assert two[0].value["offline_ids"] == [2, 3] and two[0].value["changed"] == 2
    back = await engine.admin.set_vcpus(["sim/vm0"], 8)  # more than it has: all of them
    assert back[0].value["online"] == 4


async def test_read_only_refuses_every_change(fleet: SimFleet, tmp_path: Path) -> None:
    hosts = tmp_path / "ro.toml"
    fleet.write_hosts_toml(hosts, hypervisor="sim", timeout=2.0)
    text = hosts.read_text()
    hosts.write_text(text.replace("[settings]", "[settings]\nread_only = true", 1))
    eng = FleetEngine(load_config(hosts))
    try:
        assert eng.settings.read_only
        with pytest.raises(ReadOnlyError):
            await eng.admin.time_sync(IDS)
        with pytest.raises(ReadOnlyError):
            await eng.admin.set_password(IDS, "root", Secret("x"))
        with pytest.raises(ReadOnlyError):
            await eng.admin.ssh_keys_change(IDS, "root", [KEY_A], remove=False)
        with pytest.raises(ReadOnlyError):
            await eng.admin.set_vcpus(IDS, 1)
    finally:
        await eng.stop()


async def test_live_stats_from_two_samples(engine: FleetEngine) -> None:
    ticks = [100.0]
    sampler = StatsSampler(engine, "sim/vm0", clock=lambda: ticks[0])
    assert await sampler.sample() is None
    stats = None
    for _ in range(10_000):  # until the guest's counters move (a few ms of real time)
        ticks[0] += 2.0
        stats = await sampler.sample()
        if stats is not None and stats.cpu_percent is not None:
            break
    assert stats is not None and stats.cpu_percent is not None
    assert 0 <= stats.cpu_percent <= 100
    assert set(stats.disk_read_bps) == {"vda", "vdb"}
    assert all(v >= 0 for v in stats.disk_write_bps.values())
    old = StatsSampler(engine, "sim/vm2")
    assert await old.sample() is None
    assert await old.sample() is None  # qemu-ga 5.1: neither command
    assert not old.has_cpu and not old.has_disks


async def test_status_document_has_users_and_disks_and_the_table_load(
    tmp_path: Path,
) -> None:
    from qgadash.cli.status import status_table
    from qgadash.fleet.report import vm_document

    vms = [_linux(0, "10.0.0"), _linux(1)]
    async with SimFleet(tmp_path / "sim2", vms) as sim:
        hosts = sim.write_hosts_toml(tmp_path / "h2.toml", timeout=2.0)
        eng = FleetEngine(load_config(hosts))
        try:
            await eng.poll_once()  # one poll, as `status` does
            snaps = sorted(eng.store.snapshots(), key=lambda s: s.id)
            doc = vm_document(snaps[0])
            assert doc["disks"] and {"name", "partition", "alias", "dependencies"} <= set(
                doc["disks"][0]
            )
            assert isinstance(doc["users"], list)
            assert doc["load"] is not None  # qemu-ga 10.0: guest-get-load on the one poll
            table = status_table(snaps).splitlines()
            col = table[0].index("LOAD")
            load = snaps[0].facts.load
            assert load is not None
            assert table[1][col:].split()[0] == f"{load.load1:.2f}"
            assert table[2][col:].split()[0] == "-"  # 7.2 has no guest-get-load
        finally:
            await eng.stop()
