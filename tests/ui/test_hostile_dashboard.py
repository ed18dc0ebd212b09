"""The dashboard with hostile agents in a healthy fleet: settled in time, nothing painted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.help import HelpScreen
from tests.integration.test_hostile import HEALTHY, HOSTILE, TIMEOUT, start_sim

from .conftest import SIZE
from .screen import screen_text, wait_until

USABLE_HOSTILE = {"markup", "out-of-range", "repeated-ids", "ff-flood"}  # may still be ok


async def test_every_vm_settles_within_timeout_plus_two_seconds(tmp_path: Path) -> None:
    sim = start_sim(tmp_path / "sim", HOSTILE, HEALTHY + len(HOSTILE))
    try:
        engine = FleetEngine(load_config(tmp_path / "sim" / "hosts.toml"))
        app = QgadashApp(engine, config_label="hostile")
        async with app.run_test(size=SIZE) as pilot:
            loop = asyncio.get_running_loop()
            started = loop.time()

            def settled() -> bool:
                snaps = engine.store.snapshots()
                return len(snaps) == HEALTHY + len(HOSTILE) and all(
                    s.agent is not AgentState.PENDING for s in snaps
                )

            while not settled():
                assert loop.time() - started < TIMEOUT + 2.0, "not every VM polled in time"
                await pilot.pause(0.05)
            snaps = engine.store.snapshots()
            bad = [s for s in snaps if s.agent is not AgentState.OK]
            assert len(snaps) - len(bad) >= HEALTHY
            assert len(bad) >= len(HOSTILE) - len(USABLE_HOSTILE)
            for s in bad:
                assert s.agent in (AgentState.ERROR, AgentState.TIMEOUT, AgentState.UNREACHABLE)
                assert s.error and "\n" not in s.error
            # The markup agent's strings, literally.
            await wait_until(pilot, lambda: "[bold red]" in screen_text(app))
            text = screen_text(app)
            await pilot.press("z")  # faults only: every failing row on screen at once
            await wait_until(pilot, lambda: "faults only" in screen_text(app))
            faults = screen_text(app)
            assert 0 < len(app.fleet.table.order) < len(snaps)  # the failing rows only
            for screen in (text, faults):
                assert "\x1b" not in screen and "\x07" not in screen and "\x00" not in screen
            # The UI still answers keys after all that: `?` opens the help (the footer's
            # "? Help" is on screen whether or not the key did anything).
            await pilot.press("question_mark")
            await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
            assert "Faults only" in screen_text(app)  # a line of the help's key list
    finally:
        sim.terminate()
        sim.wait(10)
