"""The optional CPU% and DISK I/O columns on the real engine with simulated guests: off
by default (and then never polled), turned on from the palette (shown, polled on every
poll of every VM, remembered in dashboard.json), values from two polls' counters; an
agent without the counters shows "—"; turned off, the polling stops."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.ui.app import QgadashApp
from qgadash.ui.commands import palette_entries

from .conftest import SIZE
from .screen import screen_text, wait_until

IDS = ["sim/a", "sim/old"]
STATS = ("guest-get-cpustats", "guest-get-diskstats")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[FleetEngine]:
    linux = [p for p in map(make_profile, range(40)) if not p.windows]
    vms = [
        SimVm("a", dataclasses.replace(linux[0], load=2.0)),
        SimVm("old", dataclasses.replace(linux[2], agent_version="5.1.0")),  # no counters
    ]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        hosts = sim.write_hosts_toml(tmp_path / "hosts.toml", poll_interval=0.3, timeout=1.0)
        eng = FleetEngine(load_config(hosts))
        try:
            yield eng
        finally:
            await eng.stop()


def run_entry(app: QgadashApp, name: str) -> None:
    next(e for e in palette_entries(app) if e.name == name).run()


async def test_cpu_and_disk_columns_from_the_palette(engine: FleetEngine) -> None:
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        await wait_until(
            pilot,
            lambda: all(
                (s := engine.store.get(i)) is not None and s.agent is AgentState.OK for i in IDS
            ),
        )
        assert not {"cpu", "io"} & set(table.shown_columns)
        assert not set(STATS) & set(engine.poll_plan.fast)
        await pilot.pause(1.0)  # a few polls: nothing asked, nothing known
        assert engine.store.get("sim/a").facts.cpu is None  # type: ignore[union-attr]
        assert not [e for e in palette_entries(app) if e.name == "Sort by CPU%"]

        run_entry(app, "Show the CPU% column")
        run_entry(app, "Show the DISK I/O column")
        await pilot.pause()
        assert {"cpu", "io"} <= set(table.shown_columns)
        assert set(STATS) <= set(engine.poll_plan.fast)
        assert "CPU%" in screen_text(app) and "DISK I/O" in screen_text(app)
        # Two polls' counters make a rate; the cell shows what the facts say.
        await wait_until(pilot, lambda: table.get_cell("sim/a", "cpu").plain.endswith("%"))
        await wait_until(pilot, lambda: table.get_cell("sim/a", "io").plain.endswith("/s"))
        snap = engine.store.get("sim/a")
        assert snap is not None and snap.facts.cpu is not None
        assert snap.facts.cpu.cpu_percent is not None and 0 <= snap.facts.cpu.cpu_percent <= 100
        assert table.get_cell("sim/old", "cpu").plain == "—"  # qemu-ga 5.1: no counters
        assert table.get_cell("sim/old", "io").plain == "—"
        saved = json.loads(
            (Path(os.environ["XDG_CONFIG_HOME"]) / "qgadash" / "dashboard.json").read_text()
        )
        assert saved["columns"] == ["cpu", "io"]
        assert [e for e in palette_entries(app) if e.name == "Sort by CPU%"]

        run_entry(app, "Hide the CPU% column")
        await pilot.pause()
        assert "cpu" not in table.shown_columns and "io" in table.shown_columns
        assert "guest-get-cpustats" not in engine.poll_plan.fast


async def test_columns_remembered_are_on_at_start(engine: FleetEngine) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "qgadash" / "dashboard.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"columns": ["io"]}))
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "io" in app.fleet.table.shown_columns and "cpu" not in app.fleet.table.shown_columns
        assert engine.poll_plan.fast[-1] == "guest-get-diskstats"
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("sim/a", "io").plain.endswith("/s")
        )
