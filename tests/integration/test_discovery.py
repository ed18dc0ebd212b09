"""Discovery runs again every few polls: VMs that start appear, VMs that are gone leave."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import REDISCOVER_EVERY, FleetEngine
from qgadash.fleet.model import AgentState
from tests.integration.realagent import short_temp_dir, start_real_agents

pytestmark = pytest.mark.real_agent
INTERVAL = 0.25


async def wait_for(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_vms_appear_go_unreachable_and_leave_with_their_sockets(tmp_path: Path) -> None:
    directory = short_temp_dir()
    agents = start_real_agents(directory, 2, ["a", "b"])
    late = []
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        f"[settings]\npoll_interval = {INTERVAL}\ntimeout = 1.0\n"
        f'[[hypervisor]]\nname = "lab"\nagents = ["{directory}/*.sock"]\n'
    )
    engine = FleetEngine(load_config(hosts))
    rediscover = INTERVAL * REDISCOVER_EVERY
    try:
        await engine.start()
        await wait_for(lambda: set(engine.store.ids()) == {"lab/a", "lab/b"}, 5)
        # A VM that starts later shows up at the next discovery, and gets polled.
        late = start_real_agents(directory, 1, ["c"])
        await wait_for(lambda: "lab/c" in engine.store.ids(), rediscover * 2 + 5)
        await wait_for(lambda: engine.store.get("lab/c").agent is AgentState.OK, 10)  # type: ignore[union-attr]
        # A VM whose agent stops but whose socket remains keeps its row, unreachable or silent.
        agents[1].process.send_signal(signal.SIGKILL)
        agents[1].process.wait(5)
        assert agents[1].socket.exists()
        await wait_for(lambda: engine.store.get("lab/b").agent is not AgentState.OK, 10)  # type: ignore[union-attr]
        # Gone from discovery (no socket any more): the row leaves.
        agents[1].socket.unlink()
        await wait_for(lambda: "lab/b" not in engine.store.ids(), rediscover * 2 + 5)
        assert {h.name: h.vm_count for h in engine.store.hypervisors()}["lab"] == 2
    finally:
        await engine.stop()
        for agent in agents + late:
            agent.stop()


async def test_two_sockets_that_map_to_one_name_are_named_not_dropped_silently(
    tmp_path: Path,
) -> None:
    from qgadash.fleet.config import load_config
    from qgadash.fleet.engine import FleetEngine
    from qgadash.sim import SimFleet, SimVm, make_profile

    a, b = tmp_path / "a", tmp_path / "b"
    async with (
        SimFleet(a, [SimVm("web", make_profile(0))]),
        SimFleet(b, [SimVm("web", make_profile(1))]),
    ):
        hosts = tmp_path / "hosts.toml"
        hosts.write_text(f'[[hypervisor]]\nname = "hv"\nagents = ["{a}/*.sock", "{b}/*.sock"]\n')
        engine = FleetEngine(load_config(hosts))
        await engine.discover()
        (status,) = engine.store.hypervisors()
        await engine.stop()
    assert engine.store.ids() == ["hv/web"]
    assert status.error is not None and f"{b}/web.sock" in status.error
