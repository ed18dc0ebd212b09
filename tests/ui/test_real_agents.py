"""The dashboard's read-only panes against real qemu-ga agents (dangerous commands blocked)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from textual.widgets import Log

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.files import FilesScreen
from tests.integration.realagent import MakeRealAgents, RealAgent

from .conftest import SIZE
from .screen import screen_text, wait_until

pytestmark = pytest.mark.real_agent


@pytest.fixture
def agents(real_agent_factory: MakeRealAgents) -> list[RealAgent]:
    return real_agent_factory(2, ["east", "west"])


def engine_for(tmp_path: Path, agents: list[RealAgent]) -> FleetEngine:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        "[settings]\nread_only = true\npoll_interval = 1.0\ntimeout = 2.0\n"
        f'[[hypervisor]]\nname = "lab"\nagents = ["{agents[0].socket.parent}/*.sock"]\n'
    )
    return FleetEngine(load_config(hosts))


async def test_detail_panes_show_what_the_real_agent_reports(
    tmp_path: Path, agents: list[RealAgent]
) -> None:
    engine = engine_for(tmp_path, agents)
    app = QgadashApp(engine, config_label="real agents")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot,
            lambda: (
                all(
                    s.agent is AgentState.OK and s.facts.os is not None
                    for s in engine.store.snapshots()
                )
                and len(engine.store) == 2
            ),
            timeout=30,
        )
        snap = engine.store.get("lab/east")
        assert snap is not None and snap.facts.os is not None and snap.facts.hostname
        kernel = snap.facts.os.kernel_release or platform.release()
        fleet = screen_text(app)
        assert "lab/east" in fleet and "lab/west" in fleet and "READ-ONLY" in fleet
        app.fleet.table.move_to("lab/east")
        await pilot.press("enter")
        await wait_until(pilot, lambda: kernel in screen_text(app))
        overview = screen_text(app)
        assert snap.facts.hostname in overview and (snap.facts.version or "") in overview
        await pilot.press("2")
        await wait_until(pilot, lambda: "127.0.0.1" in screen_text(app))
        assert "lo" in screen_text(app)
        await pilot.press("3")
        fs = snap.facts.fullest_filesystem
        assert fs is not None
        await wait_until(pilot, lambda: fs.mountpoint in screen_text(app))
        await pilot.press("5")
        await wait_until(pilot, lambda: "guest-fsfreeze-freeze" in screen_text(app))
        assert "guest-get-osinfo" in screen_text(app)


async def test_file_view_reads_a_real_file(tmp_path: Path, agents: list[RealAgent]) -> None:
    known = tmp_path / "motd.txt"
    known.write_text("".join(f"line {i}: hello from the host\n" for i in range(50)))
    engine = engine_for(tmp_path, agents)
    app = QgadashApp(engine, config_label="real agents")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(
            pilot,
            lambda: (
                len(engine.store) == 2
                and all(
                    s.agent is AgentState.OK and s.facts.info is not None
                    for s in engine.store.snapshots()
                )
            ),
        )
        app.fleet.table.move_to("lab/west")
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, FilesScreen))
        screen = app.screen
        assert isinstance(screen, FilesScreen)
        screen.view(str(known))
        viewer = screen.query_one("#viewer", Log)
        await wait_until(pilot, lambda: len(viewer.lines) >= 50)
        assert viewer.lines[0] == "line 0: hello from the host"
        assert viewer.lines[49] == "line 49: hello from the host"
        assert "line 0: hello from the host" in screen_text(app)
