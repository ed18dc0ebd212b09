"""`status` has a load for old Linux agents too: qemu-ga before 10.0 has no
guest-get-load, so the one-shot status reads /proc/loadavg with guest-file-open (mode r),
one bounded guest-file-read and guest-file-close, read-only mode included. Windows, an
agent with guest-file-* disabled, and an agent whose guest-get-load is disabled (its
owner's choice, not gone around) get no load and say why. Simulated agents of each era
(sim/profiles.py), then the real qemu-ga 7.2."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from qgadash.cli.status import status_table
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.loadavg import FROM_AGENT, LOADAVG_PATH, status_loads
from qgadash.fleet.report import status_document
from qgadash.sim import SimFleet, SimVm
from qgadash.sim.profiles import Era, era_profile
from tests.integration.realagent import RealAgent
from tests.integration.test_real_agent import hosts_for


def _vms() -> list[SimVm]:
    return [
        SimVm("qga10", era_profile(Era.QGA_10, 0)),
        SimVm("qga72", era_profile(Era.QGA_7_2, 1)),
        SimVm("qga25", era_profile(Era.QGA_2_5, 2)),
        SimVm("qga1", era_profile(Era.QGA_1_0, 3)),
        SimVm("win", era_profile(Era.WINDOWS, 4)),
        SimVm(
            "nofiles",
            dataclasses.replace(
                era_profile(Era.QGA_7_2, 5),
                disabled_commands=frozenset({"guest-file-open", "guest-file-read"}),
            ),
        ),
        SimVm(
            "blocked10",
            dataclasses.replace(
                era_profile(Era.QGA_10, 6), disabled_commands=frozenset({"guest-get-load"})
            ),
        ),
    ]


@pytest.mark.parametrize("read_only", [False, True])
async def test_status_load_for_every_era(tmp_path: Path, read_only: bool) -> None:
    async with SimFleet(tmp_path / "sim", _vms()) as sim:
        hosts = sim.write_hosts_toml(tmp_path / "hosts.toml", timeout=2.0)
        engine = FleetEngine(load_config(hosts))
        if read_only:
            engine.config = dataclasses.replace(
                engine.config, settings=dataclasses.replace(engine.config.settings, read_only=True)
            )
        try:
            await engine.poll_once()  # one poll, as `status` does
            snaps = sorted(engine.store.snapshots(), key=lambda s: s.id)
            loads = await status_loads(engine, snaps, limit=2)
            by_name = {vm_id.split("/")[1]: load for vm_id, load in loads.items()}
            assert by_name["qga10"].source == FROM_AGENT
            for old in ("qga72", "qga25", "qga1"):
                found = by_name[old]
                assert found.source == LOADAVG_PATH and found.note is None, (old, found)
                assert found.load is not None and 0 <= found.load.load1 < 100
            assert by_name["win"].load is None
            assert by_name["win"].note == "Windows has no load average"
            assert by_name["nofiles"].load is None
            assert by_name["nofiles"].note == (
                "this agent has no guest-get-load, and guest-file-open (to read "
                "/proc/loadavg) is disabled by the guest's policy"
            )
            assert by_name["blocked10"].load is None
            assert by_name["blocked10"].note == "guest-get-load is disabled by the guest's policy"

            table = status_table(snaps, (), loads).splitlines()
            col = table[0].index("LOAD")
            rows = {line.split()[0].split("/")[1]: line for line in table[1:]}
            qga72 = by_name["qga72"].load
            assert qga72 is not None
            assert rows["qga72"][col:].split()[0] == f"{qga72.load1:.2f}"
            assert rows["win"][col:].split()[0] == "-"
            assert rows["win"].endswith("no load: Windows has no load average")
            document = status_document(snaps, (), None, loads)
            vms = {vm["name"]: vm for vm in json.loads(json.dumps(document))["vms"]}
            assert vms["qga25"]["load"]["source"] == "/proc/loadavg"
            assert vms["qga25"]["load_note"] is None
            assert vms["qga10"]["load"]["source"] == "guest-get-load"
            assert (
                vms["nofiles"]["load"] is None and "guest-file-open" in vms["nofiles"]["load_note"]
            )
            # Every handle opened was closed again.
            for name in ("qga72", "qga25", "qga1"):
                assert not sim.agent(name)._handles
        finally:
            await engine.stop()


@pytest.mark.real_agent
async def test_status_load_from_the_real_agent_7_2(
    tmp_path: Path,
    real_agent_factory,  # type: ignore[no-untyped-def]
) -> None:
    """The real qemu-ga 7.2 (no guest-get-load) reads this machine's /proc/loadavg."""
    agents: list[RealAgent] = real_agent_factory(1, ["alpha"])
    engine = FleetEngine(load_config(hosts_for(tmp_path, agents)))
    try:
        before = os.getloadavg()
        await engine.poll_once()
        snaps = list(engine.store.snapshots())
        assert snaps[0].facts.load is None  # 7.2: the poll has none
        (found,) = (await status_loads(engine, snaps, limit=4)).values()
        after = os.getloadavg()
        assert found.source == LOADAVG_PATH and found.note is None and found.load is not None
        # The 15-minute average, between what this process read before and after.
        low, high = min(before[2], after[2]), max(before[2], after[2])
        assert low - 0.01 <= found.load.load15 <= high + 0.01
    finally:
        await engine.stop()


async def test_a_frozen_old_agent_is_not_asked_and_says_why(tmp_path: Path) -> None:
    """A frozen guest's agent disables guest-file-* (as qemu-ga does): no read is tried."""
    vms = [SimVm("qga72", era_profile(Era.QGA_7_2, 1))]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        hosts = sim.write_hosts_toml(tmp_path / "hosts.toml", timeout=2.0)
        engine = FleetEngine(load_config(hosts))
        try:
            await engine.poll_once()
            (vm_id,) = [s.id for s in engine.store.snapshots()]
            assert all(r.ok for r in await engine.freeze([vm_id], thaw_after=30.0))
            await engine.poll_vms([vm_id])
            (found,) = (await status_loads(engine, list(engine.store.snapshots()), 4)).values()
            assert found.load is None
            assert found.note == (
                "this agent has no guest-get-load, and guest-file-open (to read "
                "/proc/loadavg) is disabled while the guest is frozen"
            )
            assert not sim.agent("qga72")._handles
        finally:
            await engine.stop()
