"""The exporter on the real engine and simulated agents, in one process: a scrape never
waits for a poll (nor for the event loop), polls are counted by result, and --shard keeps
one exporter's slice."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from qgadash.agent.replies import FreezeState
from qgadash.cli.metrics import shard_config
from qgadash.cli.select import UsageError
from qgadash.exporter import MetricsServer
from qgadash.fleet.config import Config, HypervisorConfig, Settings, VmConfig, load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, VmRef, VmSnapshot
from qgadash.fleet.store import FleetStore
from qgadash.sim import SimFleet
from qgadash.sim.profiles import Fault


async def scrape(server: MetricsServer) -> tuple[str, float]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(server.url) as response:
        assert response.status == 200
        text = await response.text()
    return text, time.monotonic() - started


def value(text: str, prefix: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


async def test_a_scrape_does_not_wait_for_the_polls_in_flight(tmp_path: Path) -> None:
    async with SimFleet.healthy(tmp_path / "vms", 8, faults={Fault.SILENT: 8}) as fleet:
        hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=10.0, poll_interval=1.0)
        engine = FleetEngine(load_config(hosts))
        server = MetricsServer(engine.store, "127.0.0.1", 0)
        await server.start()
        try:
            await engine.start()  # every agent silent: each poll hangs for its 10 s timeout
            text, elapsed = await scrape(server)
            assert elapsed < 1.0
            assert text.count('state="pending"} 1') == 8  # known, not yet answered
            assert "qgadash_agent_up{" not in text  # no guess before a poll ends
        finally:
            await engine.stop()
            await server.stop()


async def test_a_scrape_is_answered_while_the_event_loop_is_blocked() -> None:
    """The exporter's loop stuck in a synchronous call (a long parse, a library that
    blocks): a scrape is still answered, with the fleet as the exporter last saw it."""
    store = FleetStore()
    for name, freeze in (("db", FreezeState.FROZEN), ("web", FreezeState.THAWED)):
        ref = VmRef("hv1", name, f"/run/{name}.sock")
        store.put(VmSnapshot(ref, AgentState.OK, last_poll=1.0, last_seen=1.0, freeze=freeze))
    server = MetricsServer(store, "127.0.0.1", 0)
    await server.start()
    answers: list[str] = []
    answered = threading.Event()

    def scrape_from_elsewhere() -> None:
        with urllib.request.urlopen(server.url, timeout=60) as response:
            answers.append(response.read().decode())
        answered.set()

    try:
        await asyncio.sleep(0.1)  # the server has had its turns of the loop since start
        scraper = threading.Thread(target=scrape_from_elsewhere, daemon=True)
        scraper.start()
        # Synchronous: nothing else runs on this loop until the scrape is answered (or
        # the wait gives up, which is the failure).
        answered_while_blocked = answered.wait(10)
        await asyncio.to_thread(scraper.join, 60)
        assert answered_while_blocked, "the scrape waited for the event loop"
        (text,) = answers
        assert 'qgadash_fsfreeze_frozen{vm="hv1/db",hypervisor="hv1"} 1' in text
        assert 'qgadash_fsfreeze_frozen{vm="hv1/web",hypervisor="hv1"} 0' in text
    finally:
        await server.stop()


async def test_polls_are_counted_by_result(tmp_path: Path) -> None:
    async with SimFleet.healthy(tmp_path / "vms", 6, faults={Fault.SILENT: 1}) as fleet:
        hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=0.5, poll_interval=0.3)
        engine = FleetEngine(load_config(hosts))
        server = MetricsServer(engine.store, "127.0.0.1", 0)
        await server.start()
        try:
            await engine.start()
            give_up = time.monotonic() + 30
            while True:
                text, _ = await scrape(server)
                ok = value(text, 'qgadash_polls_total{result="ok"}')
                timeouts = value(text, 'qgadash_polls_total{result="timeout"}')
                if ok >= 15 and timeouts >= 1:
                    break
                assert time.monotonic() < give_up, text[-3000:]
                await asyncio.sleep(0.3)
            assert value(text, "qgadash_poll_duration_seconds_count") >= 15
            assert value(text, 'qgadash_vms{state="ok"}') == 5
            assert value(text, 'qgadash_vms{state="timeout"}') == 1
        finally:
            await engine.stop()
            await server.stop()


def test_a_shard_keeps_the_tagged_hypervisors_and_their_vms() -> None:
    config = Config(
        None,
        Settings(),
        (
            HypervisorConfig("a1", tags=("rack-a",)),
            HypervisorConfig("b1", tags=("rack-b",)),
            HypervisorConfig("a2", tags=("rack-a", "gpu")),
        ),
        (
            VmConfig("x", "a1", "/run/x.sock"),
            VmConfig("y", "local", "/run/y.sock", tags=("rack-a",)),
            VmConfig("z", "b1", "/run/z.sock"),
        ),
    )
    shard = shard_config(config, ["rack-a"])
    assert [hv.name for hv in shard.hypervisors] == ["a1", "a2"]
    assert [vm.name for vm in shard.vms] == ["x", "y"]
    assert [hv.name for hv in shard_config(config, ["gpu", "rack-b"]).hypervisors] == ["b1", "a2"]
    with pytest.raises(UsageError, match="no hypervisor"):
        shard_config(config, ["nowhere"])
