"""Power actions sent from here keep the VM's row, with what was done and when, until
the VM is back (engine on simulated guests; the JSON of `status` says the same)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.fleet.report import status_document
from qgadash.sim import SimFleet, SimVm, make_profile


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[SimFleet, FleetEngine]]:
    vms = [SimVm(f"vm{i}", make_profile(i)) for i in range(3)]
    fleet = SimFleet(tmp_path / "sim", vms)
    await fleet.start()
    hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=0.5, session="per-poll")
    engine = FleetEngine(load_config(hosts))
    try:
        await engine.poll_once()
        yield fleet, engine
    finally:
        await engine.stop()
        await fleet.stop()


def agent_doc(engine: FleetEngine, vm_id: str) -> dict[str, object]:
    doc = status_document(engine.store.snapshots(), engine.store.hypervisors())
    found = next(v for v in doc["vms"] if v["id"] == vm_id)
    agent = found["agent"]
    assert isinstance(agent, dict)
    return agent


async def test_shut_down_vm_keeps_its_row_as_stopped_until_it_is_back(
    rig: tuple[SimFleet, FleetEngine],
) -> None:
    fleet, engine = rig
    [result] = await engine.shutdown(["sim/vm1"])
    assert result.ok, result.error
    assert not fleet.is_listening("vm1")  # the guest is off: its socket is gone
    await engine.poll_once()  # discovers (no socket for vm1) and polls
    snap = engine.store.get("sim/vm1")
    assert snap is not None and len(engine.store) == 3
    assert snap.agent is AgentState.STOPPED
    assert snap.lifecycle is not None and snap.lifecycle.action == "powerdown"
    assert snap.lifecycle.label == "shut off by you"
    agent = agent_doc(engine, "sim/vm1")
    assert agent["state"] == "stopped" and agent["action"] == "powerdown"
    assert isinstance(agent["since"], str) and agent["since"].endswith("Z")
    assert agent_doc(engine, "sim/vm0")["action"] is None
    # Back: the row is an ordinary one again.
    fleet.power_on("vm1")
    await engine.poll_once()
    back = engine.store.get("sim/vm1")
    assert back is not None and back.agent is AgentState.OK and back.lifecycle is None
    assert agent_doc(engine, "sim/vm1")["state"] == "ok"


async def test_suspended_and_rebooting_vms_are_not_faults_and_a_reboot_comes_back(
    rig: tuple[SimFleet, FleetEngine],
) -> None:
    _fleet, engine = rig
    [suspended] = await engine.suspend(["sim/vm0"], kind="ram")
    [rebooted] = await engine.shutdown(["sim/vm2"], mode="reboot")
    assert suspended.ok and rebooted.ok
    await engine.poll_once()
    vm0, vm2 = engine.store.get("sim/vm0"), engine.store.get("sim/vm2")
    assert vm0 is not None and vm0.agent is AgentState.SUSPENDED
    assert vm0.lifecycle is not None and vm0.lifecycle.label == "suspended (ram)"
    assert vm2 is not None and vm2.agent is AgentState.REBOOTING
    doc = agent_doc(engine, "sim/vm0")
    assert doc["state"] == "suspended" and doc["action"] == "suspend-ram"
    assert agent_doc(engine, "sim/vm2")["state"] == "rebooting"
    # The simulated reboot takes 5 s (a suspend 10 s): poll until the guest is back.
    deadline = time.monotonic() + 15
    while (snap := engine.store.get("sim/vm2")) is not None and snap.lifecycle is not None:
        assert time.monotonic() < deadline, "the rebooted guest never came back"
        await engine.poll_vms(["sim/vm2"])
    assert snap is not None and snap.agent is AgentState.OK
    still = engine.store.get("sim/vm0")
    assert still is not None and still.agent is AgentState.SUSPENDED


async def test_forget_removes_only_a_row_kept_for_a_power_action(
    rig: tuple[SimFleet, FleetEngine],
) -> None:
    _fleet, engine = rig
    assert not await engine.forget("sim/vm0")  # an ordinary VM is not forgotten
    await engine.shutdown(["sim/vm2"], mode="halt")
    await engine.shutdown(["sim/vm1"])
    await engine.poll_once()
    halted = engine.store.get("sim/vm2")
    assert halted is not None and halted.agent is AgentState.STOPPED
    assert halted.lifecycle is not None and halted.lifecycle.label == "halted by you"
    assert await engine.forget("sim/vm1")
    assert engine.store.get("sim/vm1") is None
    await engine.poll_once()  # no socket: discovery does not bring it back
    assert engine.store.get("sim/vm1") is None and len(engine.store) == 2
