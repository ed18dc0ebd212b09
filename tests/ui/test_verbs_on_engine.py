"""Every verb the CLI has, from the dashboard, on the real engine with simulated guests:
power actions that keep their rows (shut off, suspended), exec with each VM's output,
fstrim, freeze of chosen mount points, a raw agent command (read-only rules), and the
Windows freeze limit in the freeze dialog."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.fleet.report import status_document
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.ui import verbs
from qgadash.ui.app import QgadashApp
from qgadash.ui.commands import palette_entries
from qgadash.ui.screens.files import PromptScreen
from qgadash.ui.screens.modals import (
    ActionRunScreen,
    ConfirmActionScreen,
    MessageScreen,
    PowerScreen,
)

from .conftest import SIZE
from .screen import screen_text, wait_until

# db-01, db-02, web-03 run Linux; win-09 Windows (one simulated guest in ten).
NAMES = {"db-01": 1, "db-02": 2, "web-03": 3, "win-09": 9}

MakeEngine = Callable[..., Awaitable[tuple[SimFleet, FleetEngine]]]


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[MakeEngine]:
    made: list[tuple[SimFleet, FleetEngine]] = []

    async def make(**settings: Any) -> tuple[SimFleet, FleetEngine]:
        vms = [SimVm(name, make_profile(i)) for name, i in NAMES.items()]
        assert vms[-1].profile.windows
        fleet = SimFleet(tmp_path / "sim", vms)
        await fleet.start()
        hosts = fleet.write_hosts_toml(
            # A request timeout a loaded machine can keep (0.5 s failed execs under CI load).
            tmp_path / "hosts.toml",
            poll_interval=0.3,
            timeout=3.0,
            session="per-poll",
        )
        config = load_config(hosts)
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, **settings)
        )
        engine = FleetEngine(config)
        made.append((fleet, engine))
        return fleet, engine

    yield make
    for fleet, engine in made:
        await engine.stop()
        await fleet.stop()


def answering(engine: FleetEngine) -> bool:
    snaps = [engine.store.get(f"sim/{n}") for n in NAMES]
    return all(s is not None and s.agent is AgentState.OK for s in snaps)


def agent_cell(app: QgadashApp, vm_id: str) -> str:
    return app.fleet.table.get_cell(vm_id, "agent").plain


async def run_to_end(pilot: Pilot[Any], app: QgadashApp) -> ActionRunScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
    run = app.screen
    assert isinstance(run, ActionRunScreen)
    await wait_until(pilot, lambda: run.finished, timeout=20)
    return run


async def confirm(pilot: Pilot[Any], app: QgadashApp) -> None:
    """The dialog on top opened with Cancel focused; the operator chooses the action."""
    await wait_until(pilot, lambda: bool(app.screen.query("#confirm")))
    await wait_until(pilot, lambda: isinstance(app.focused, Button))
    assert isinstance(app.focused, Button) and app.focused.id == "cancel"
    await wait_until(pilot, lambda: not app.screen.query_one("#confirm", Button).disabled)
    app.screen.query_one("#confirm", Button).press()


async def test_shut_down_and_suspended_vms_keep_their_rows_until_removed(
    make_engine: MakeEngine,
) -> None:
    fleet, engine = await make_engine()
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.table.move_to("sim/db-01")
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await confirm(pilot, app)  # the first option: power down
        assert all(r.ok for r in (await run_to_end(pilot, app)).results)
        await pilot.press("escape")
        app.fleet.table.move_to("sim/db-02")
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await pilot.press("4")  # suspend to RAM
        await confirm(pilot, app)
        assert all(r.ok for r in (await run_to_end(pilot, app)).results)
        await pilot.press("escape")
        await wait_until(pilot, lambda: agent_cell(app, "sim/db-01") == "shut off by you")
        await wait_until(pilot, lambda: agent_cell(app, "sim/db-02") == "suspended (ram)")
        assert not fleet.is_listening("db-01")  # its socket is gone, its row is not
        assert len(app.fleet.table.order) == 4 and "4 VMs" in screen_text(app)
        assert "■ 1 stopped" in screen_text(app) and "◐ 1 suspended" in screen_text(app)
        doc = status_document(engine.store.snapshots(), engine.store.hypervisors())
        agents = {v["id"]: v["agent"] for v in doc["vms"]}
        assert agents["sim/db-01"]["state"] == "stopped"
        assert agents["sim/db-02"]["state"] == "suspended"
        assert agents["sim/db-02"]["action"] == "suspend-ram"
        # Not faults: the faults-only view leaves them out.
        await pilot.press("z")
        await pilot.pause()
        assert "sim/db-01" not in app.fleet.table.order
        await pilot.press("z")
        await pilot.pause()
        # The operator is done with db-01: d removes its row.
        app.fleet.table.move_to("sim/db-01")
        await pilot.pause()
        assert "d removes the row" in screen_text(app)
        await pilot.press("d")
        await wait_until(pilot, lambda: "sim/db-01" not in app.fleet.table.order)


async def test_exec_on_marked_vms_shows_each_exit_code_and_output(
    make_engine: MakeEngine,
) -> None:
    _fleet, engine = await make_engine()
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.set_marks({"sim/db-01", "sim/web-03", "sim/win-09"})
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#command", Input).value = "hostname"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        text = screen_text(app)
        assert "Run: hostname" in text and "Will run on 2 VMs" in text
        assert "sim/win-09 (guest-exec is disabled by the guest's policy)" in text
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert sorted(r.vm_id for r in run.results) == ["sim/db-01", "sim/web-03"]
        table = run.query_one("#results", DataTable)
        assert str(table.get_cell("sim/db-01", "outcome")) == "exit 0"
        hostname = engine.store.get("sim/web-03").facts.hostname  # type: ignore[union-attr]
        table.move_cursor(row=table.get_row_index("sim/web-03"))
        await pilot.pause()
        output = str(run.query_one("#output", Static).content)
        assert "sim/web-03  exit 0" in output and f"── stdout\n{hostname}" in output
        assert "── stderr: nothing" in output
        await pilot.press("escape")
        # A failing command says so, in the error colour, per VM.
        verbs.prompt_exec(app, ["sim/db-02"], "this VM", command="false")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert "exit 1" in screen_text(app)


async def test_fstrim_and_a_freeze_of_chosen_mount_points(make_engine: MakeEngine) -> None:
    fleet, engine = await make_engine()
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.table.move_to("sim/db-01")
        await pilot.pause()
        names = [e.name for e in palette_entries(app)]
        assert "Trim filesystems (fstrim) of sim/db-01" in names
        verbs.confirm_fstrim(app, ["sim/db-01"], "this VM")
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert run.results[0].ok
        assert "/: " in screen_text(app) and "trimmed" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        app.screen.query_one("#mountpoints", Input).value = "/ /not-mounted"
        app.screen.query_one("#thaw-after", Input).value = "30"
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert run.results[0].ok and run.results[0].value == 1  # only / is mounted
        assert fleet.agent("db-01").frozen
        assert "1 filesystem" in screen_text(app)


async def test_the_freeze_dialog_says_windows_guests_thaw_after_10_s(
    make_engine: MakeEngine,
) -> None:
    _fleet, engine = await make_engine()
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.set_marks({"sim/db-01", "sim/win-09"})
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        dialog = app.screen
        note = dialog.query_one("#vss-note", Static)
        await wait_until(pilot, lambda: note.display)
        text = str(note.content)
        assert "Windows (VSS) holds a freeze at most 10 s" in text
        assert "sim/win-09" in text and "sim/db-01" not in text
        dialog.query_one("#thaw-after", Input).value = "8"
        await wait_until(pilot, lambda: not note.display)


async def test_a_raw_agent_command_from_the_palette_follows_the_read_only_rules(
    make_engine: MakeEngine,
) -> None:
    fleet, engine = await make_engine(read_only=True)
    app = QgadashApp(engine, config_label="sim")
    said: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.table.move_to("sim/db-01")
        await pilot.pause()
        names = [e.name for e in palette_entries(app)]
        assert "Agent command on sim/db-01…" in names  # offered, read-only or not
        assert not any(n.startswith("Run a command") for n in names)
        verbs.prompt_agent_command(app, "sim/db-01")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")  # guest-info, the default
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        text = screen_text(app)
        assert "guest-info on sim/db-01: ok" in text and '"version"' in text
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.fleet)
        app.notify = lambda message, **_kw: said.append(message)  # type: ignore[method-assign]
        verbs.agent_command(app, "sim/db-01", "guest-shutdown", None)
        await pilot.pause()
        assert said[-1] == "READ-ONLY: guest-shutdown may change the guest; not sent."
        assert not fleet.agent("db-01").powered_off


async def test_a_raw_command_that_may_change_the_guest_is_confirmed_first(
    make_engine: MakeEngine,
) -> None:
    fleet, engine = await make_engine()
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        verbs.agent_command(app, "sim/db-02", "guest-shutdown", {"mode": "halt"})
        await wait_until(pilot, lambda: "guest-shutdown may change sim/db-02" in screen_text(app))
        assert isinstance(app.screen, MessageScreen)
        await wait_until(pilot, lambda: isinstance(app.focused, Button))
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        await pilot.press("enter")  # Cancel
        await wait_until(pilot, lambda: app.screen is app.fleet)
        await pilot.pause(0.5)
        assert not fleet.agent("db-02").powered_off
        verbs.agent_command(app, "sim/db-02", "guest-shutdown", {"mode": "halt"})
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        await confirm(pilot, app)
        await wait_until(pilot, lambda: fleet.agent("db-02").powered_off)
        await wait_until(pilot, lambda: agent_cell(app, "sim/db-02") == "halted by you")
