"""The bugs of issue 12, each as the user met it, against simulated old agents.

These use only what qgadash had before the issue (the engine, the CLI), so each can be
run against the old code and seen to fail there: every VM `timeout`, `agent VM
guest-ping` waiting 30 s, a freeze of mount points sent to an agent without
guest-fsfreeze-freeze-list.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, FreezeState
from qgadash.sim import Era, SimFleet, SimVm, era_profile

TIMEOUT = 2.0


@pytest.fixture
async def old(tmp_path: Path) -> AsyncIterator[SimFleet]:
    vms = [
        SimVm("qga-1-0", era_profile(Era.QGA_1_0, 1)),
        SimVm("qga-1-2", era_profile(Era.QGA_1_2, 2)),
        SimVm("qga-2-5", era_profile(Era.QGA_2_5, 3)),
    ]
    async with SimFleet(tmp_path / "sim", vms) as fleet:
        yield fleet


def engine_for(fleet: SimFleet, directory: Path, session: str = "per-poll") -> FleetEngine:
    hosts = fleet.write_hosts_toml(
        directory / "hosts.toml", timeout=TIMEOUT, poll_interval=1.0, session=session
    )
    return FleetEngine(load_config(hosts))


@pytest.mark.parametrize("session", ["held", "per-poll"])
async def test_agents_that_refuse_request_ids_are_ok_not_timeout(
    tmp_path: Path, old: SimFleet, session: str
) -> None:
    engine = engine_for(old, tmp_path, session)
    try:
        await engine.poll_once()
        await engine.poll_once()
        for name in ("qga-1-2", "qga-2-5"):
            snap = engine.store.get(f"sim/{name}")
            assert snap is not None and snap.agent is AgentState.OK, snap
            assert snap.freeze is FreezeState.THAWED and snap.facts.interfaces
    finally:
        await engine.stop()


async def test_qemu_ga_1_0_without_sync_delimited_is_ok_and_its_freeze_state_known(
    tmp_path: Path, old: SimFleet
) -> None:
    """Its guest-info lists no commands: what a 1.0 agent has comes from its version."""
    engine = engine_for(old, tmp_path)
    try:
        await engine.poll_once()
        await engine.poll_once()
        snap = engine.store.get("sim/qga-1-0")
        assert snap is not None and snap.agent is AgentState.OK, snap
        assert snap.freeze is FreezeState.THAWED
        assert snap.facts.info is not None and snap.facts.info.offers("guest-fsfreeze-freeze")
    finally:
        await engine.stop()


async def test_freezing_mount_points_is_not_sent_to_agents_without_freeze_list(
    tmp_path: Path, old: SimFleet
) -> None:
    """guest-fsfreeze-freeze-list came with qemu-ga 2.2: older agents are skipped with the
    reason, unsent (before: sent, and refused as an unknown command)."""
    engine = engine_for(old, tmp_path, "held")
    try:
        await engine.poll_once()
        ids = ["sim/qga-1-0", "sim/qga-1-2", "sim/qga-2-5"]
        results = {r.vm_id: r for r in await engine.freeze(ids, mountpoints=["/"], thaw_after=1.0)}
        for vm in ids[:2]:
            assert results[vm].ok is False
            assert "has no guest-fsfreeze-freeze-list" in (results[vm].error or "")
            assert "not sent" in (results[vm].error or "")
        assert results["sim/qga-2-5"].ok, results["sim/qga-2-5"]
        assert not old.agent("qga-1-2").frozen
    finally:
        await engine.stop()


@pytest.fixture
def old_fleet_process(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "fleet"
    args = [sys.executable, "-m", "qgadash.sim", "--dir", str(directory), "--count", "1"]
    args += ["--era", "1.2=1", "--timeout", str(TIMEOUT)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert "ready" in proc.stdout.readline()
        yield directory / "hosts.toml"
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_command_answers_at_once_from_an_agent_that_refuses_ids(
    old_fleet_process: Path,
) -> None:
    """Before: `qgadash agent VM guest-ping` waited 30 s for 'outcome unknown'."""
    started = time.monotonic()
    qgadash = [sys.executable, "-m", "qgadash", "--hosts", str(old_fleet_process)]
    proc = subprocess.run(
        [*qgadash, "agent", "sim/vm-00000", "guest-ping"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 10
    status = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(old_fleet_process), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    (vm,) = json.loads(status.stdout)["vms"]
    assert vm["agent"]["state"] == "ok" and status.returncode == 0
