"""Freezing from the dashboard on the real engine, with simulated guests (qgadash.sim).

The engine's own deadline timers, its concurrency, its failed and unknown outcomes and
its keepers are what these screens show, so nothing here is faked: the faults are the
simulator's (an agent that stops answering, a link that closes every connection).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from rich.color import Color
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import NO_KEEPER, HoldJournal, HoldRecord, Owner, Reach, new_token
from qgadash.fleet.model import AgentState
from qgadash.sim import Fault, SimFleet, SimVm, make_profile
from qgadash.sim.agent import GuestAgent
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.modals import (
    ActionRunScreen,
    ConfirmActionScreen,
    MessageScreen,
    QuitScreen,
)

from .conftest import SIZE
from .screen import screen_text, wait_until

NAMES = ("db-01", "db-02", "web-03")


@dataclasses.dataclass
class Rig:
    fleet: SimFleet
    engine: FleetEngine
    journal: HoldJournal | None

    def agent(self, vm_id: str) -> GuestAgent:
        return self.fleet.agent(vm_id.split("/", 1)[1])

    def answering(self, *vm_ids: str) -> bool:
        snaps = [self.engine.store.get(v) for v in vm_ids]
        return all(s is not None and s.agent is AgentState.OK for s in snaps)


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audit logs, journals and keepers of these tests never reach ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[MakeRig]:
    made: list[Rig] = []

    async def make(
        *,
        journal: bool = False,
        session: str = "held",
        faults: Mapping[str, Fault] | None = None,
        action_timeout: float = 1.0,
        poll_interval: float = 0.3,
    ) -> Rig:
        vms = [
            SimVm(n, make_profile(i), (faults or {}).get(n, Fault.NONE))
            for i, n in enumerate(NAMES)
        ]
        fleet = SimFleet(tmp_path / "sim", vms)
        await fleet.start()
        hosts = fleet.write_hosts_toml(
            tmp_path / "hosts.toml", poll_interval=poll_interval, timeout=0.5, session=session
        )
        config = load_config(hosts)
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, action_timeout=action_timeout)
        )
        hold_journal = HoldJournal(tmp_path / "holds") if journal else None
        rig = Rig(fleet, FleetEngine(config, journal=hold_journal), hold_journal)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.engine.stop()
        await rig.fleet.stop()


def header(app: QgadashApp) -> str:
    return screen_text(app).splitlines()[0]


async def click(pilot: Pilot[Any], app: QgadashApp, selector: str) -> None:
    """Click a button of the screen on top once it is laid out (a screen just pushed
    has no regions yet: a click then lands on whatever is below)."""

    def shown() -> bool:
        found = app.screen.query(selector)
        return bool(found) and found.first().region.area > 0

    await wait_until(pilot, shown)
    await pilot.click(selector)


def quit_list(app: QgadashApp) -> str:
    """The quit dialog's list as shown (not the table behind the dialog)."""
    content = app.screen.query_one("#quit-holds", Static).content
    return content.plain if isinstance(content, Text) else str(content)


def colours(text: Text) -> set[Color | None]:
    console = Console(width=200, color_system="truecolor")
    return {s.style.color if s.style else None for s in text.render(console) if s.text.strip()}


def row_is_red(app: QgadashApp, vm_id: str) -> bool:
    """Every shown cell of the row is drawn in the theme's error colour."""
    table = app.fleet.table
    error = app.palette.error.color
    cells = [table.get_cell(vm_id, key) for key in table.shown_columns]
    return all(colours(cell) <= {error} for cell in cells) and any(
        colours(cell) == {error} for cell in cells
    )


def outcome_of(run: ActionRunScreen, vm_id: str) -> str:
    table: DataTable[Text] = run.query_one("#results", DataTable)
    return str(table.get_cell(vm_id, "outcome"))


async def open_freeze_dialog(
    pilot: Pilot[Any], app: QgadashApp, vm_ids: set[str]
) -> ConfirmActionScreen:
    app.fleet.set_marks(vm_ids)
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
    dialog = app.screen
    assert isinstance(dialog, ConfirmActionScreen)
    assert isinstance(app.focused, Button) and app.focused.id == "cancel"
    # The keeper check answers before the freeze can be confirmed.
    await wait_until(pilot, lambda: dialog.keeper_answers is not None)
    await wait_until(pilot, lambda: not dialog.query_one("#confirm", Button).disabled)
    return dialog


async def freeze_from_dialog(
    pilot: Pilot[int], app: QgadashApp, dialog: ConfirmActionScreen, after: str
) -> ActionRunScreen:
    dialog.query_one("#thaw-after", Input).value = after
    await click(pilot, app, "#confirm")
    await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
    run = app.screen
    assert isinstance(run, ActionRunScreen)
    await wait_until(pilot, lambda: run.finished)
    return run


# -- freeze, keepers, countdown, the engine's deadline thaw ------------------------------------


async def test_freeze_from_the_dashboard_then_the_engine_thaws_at_the_deadline(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(journal=True, faults={"web-03": Fault.SILENT}, poll_interval=1)
    engine = rig.engine
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01", "sim/db-02"))
        await wait_until(
            pilot,
            lambda: engine.store.get("sim/web-03").agent is AgentState.TIMEOUT,  # type: ignore[union-attr]
        )
        dialog = await open_freeze_dialog(pilot, app, {"sim/db-01", "sim/db-02", "sim/web-03"})
        text = screen_text(app)
        assert "Will freeze 2 VMs" in text and "Skipped 1" in text and "sim/web-03" in text
        assert "local keeper (this machine) for 2 VMs: sim/db-01  sim/db-02" in text
        run = await freeze_from_dialog(pilot, app, dialog, "8")
        assert sorted((r.vm_id, r.ok) for r in run.results) == [
            ("sim/db-01", True),
            ("sim/db-02", True),
        ]
        assert rig.agent("sim/db-01").frozen and rig.agent("sim/db-02").frozen
        assert {h.vm_id: h.keeper for h in engine.holds()} == {
            "sim/db-01": "local",
            "sim/db-02": "local",
        }
        await pilot.press("escape")
        # The header counts our holds and counts down to the nearest deadline.
        await wait_until(pilot, lambda: "❄ 2 frozen · next thaw 0:0" in header(app))
        first = re.search(r"next thaw 0:0(\d)", header(app))
        assert first is not None
        await wait_until(pilot, lambda: f"next thaw 0:0{int(first.group(1)) - 1}" in header(app))
        # The details say which keeper holds the thaw.
        app.fleet.table.move_to("sim/db-01")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await wait_until(
            pilot, lambda: "keeper: local keeper (a process on this machine)" in screen_text(app)
        )
        await pilot.press("escape")
        # The engine's own timer thaws at the deadline; the table and header follow.
        await wait_until(
            pilot,
            lambda: not rig.agent("sim/db-01").frozen and not rig.agent("sim/db-02").frozen,
            timeout=20,
        )
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("sim/db-01", "fs").plain == "thawed"
        )
        await wait_until(pilot, lambda: "frozen" not in header(app))
        assert engine.frozen_by_us() == []
        assert rig.journal is not None and rig.journal.load() == ([], [])


async def test_every_guest_frozen_from_the_dashboard_is_held_while_polls_run(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(journal=True, poll_interval=0.3)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering(*(f"sim/{n}" for n in NAMES)))
        await pilot.pause(1.0)  # polls in full swing
        dialog = await open_freeze_dialog(pilot, app, {f"sim/{n}" for n in NAMES})
        run = await freeze_from_dialog(pilot, app, dialog, "600")
        assert all(r.ok for r in run.results)
        frozen = {f"sim/{n}" for n in NAMES if rig.agent(f"sim/{n}").frozen}
        assert frozen == {f"sim/{n}" for n in NAMES}
        await pilot.pause(1.0)
        assert set(rig.engine.frozen_by_us()) == frozen
        await pilot.press("escape")
        await wait_until(pilot, lambda: "❄ 3 frozen · next thaw" in header(app))


async def test_freeze_dialog_cancel_has_the_focus_and_freezes_nothing(make_rig: MakeRig) -> None:
    rig = await make_rig()
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        await open_freeze_dialog(pilot, app, {"sim/db-01"})
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.fleet)
        await pilot.pause(0.3)
        assert rig.engine.holds() == [] and not rig.agent("sim/db-01").frozen


async def test_thaw_after_0_arms_no_keeper_and_quitting_lists_and_thaws_it(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(journal=True)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        dialog = await open_freeze_dialog(pilot, app, {"sim/db-01"})
        dialog.query_one("#thaw-after", Input).value = "0"
        await wait_until(
            pilot, lambda: "Thaw after 0 (never): no keeper is armed" in screen_text(app)
        )
        assert "local keeper" not in screen_text(app)
        run = await freeze_from_dialog(pilot, app, dialog, "0")
        assert [r.ok for r in run.results] == [True]
        [hold] = rig.engine.holds()
        assert hold.deadline is None and hold.keeper == NO_KEEPER
        await pilot.press("escape")
        await wait_until(pilot, lambda: "❄ 1 frozen" in header(app))
        assert "next thaw" not in header(app)
        # Quitting names the untimed hold; Cancel has the focus.
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        line = next(ln for ln in quit_list(app).splitlines() if "sim/db-01" in ln)
        assert "no automatic thaw" in line and "no keeper" in line
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.fleet)
        assert app.is_running and rig.agent("sim/db-01").frozen
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await click(pilot, app, "#confirm")
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    assert not rig.agent("sim/db-01").frozen
    assert rig.engine.frozen_by_us() == []
    assert app.return_code == 0


async def test_the_quit_dialog_follows_deadline_thaws_while_it_is_open(make_rig: MakeRig) -> None:
    """Deadlines are an hour away until the dialog is up; then db-01's is brought to now
    (the guard's own timer thaws it): no deadline can pass before the dialog opens, however
    slow the machine."""
    rig = await make_rig()
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01", "sim/db-02"))
        results = await rig.engine.freeze(["sim/db-01"], thaw_after=3600)
        results += await rig.engine.freeze(["sim/db-02"], thaw_after=3600)
        assert all(r.ok for r in results)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        quit_screen = app.screen
        assert isinstance(quit_screen, QuitScreen)
        confirm = quit_screen.query_one("#confirm", Button)
        assert quit_screen.held == ["sim/db-01", "sim/db-02"]
        assert str(confirm.label) == "Thaw 2 VMs and quit"
        # The engine thaws db-01 at its deadline: it leaves the list.
        rig.engine.guard.start_deadline("sim/db-01", 0.1)
        await wait_until(pilot, lambda: quit_screen.held == ["sim/db-02"], timeout=30)
        assert "sim/db-01" not in quit_list(app) and "sim/db-02" in quit_list(app)
        assert str(confirm.label) == "Thaw 1 VM and quit"
        assert app.focused is quit_screen.query_one("#cancel", Button)
        assert not rig.agent("sim/db-01").frozen
        # Then db-02: nothing is left, and the dialog says so instead of a stale list.
        rig.engine.guard.start_deadline("sim/db-02", 0.1)
        await wait_until(pilot, lambda: quit_screen.held == [], timeout=30)
        assert "Nothing this session froze is still frozen" in quit_list(app)
        assert "sim/db-02" not in quit_list(app)
        assert str(confirm.label) == "Quit"
        assert not rig.agent("sim/db-01").frozen and not rig.agent("sim/db-02").frozen
        await click(pilot, app, "#confirm")
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    assert app.return_code == 0


async def test_quit_without_holds_quits_at_once(make_rig: MakeRig) -> None:
    rig = await make_rig()
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running)
    assert app.return_code == 0


async def test_thaw_is_confirmed_then_the_engine_thaws(make_rig: MakeRig) -> None:
    rig = await make_rig()
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        assert (await rig.engine.freeze(["sim/db-01"], thaw_after=600))[0].ok
        app.fleet.table.move_to("sim/db-01")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        await pilot.press("tab", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
        run = app.screen
        assert isinstance(run, ActionRunScreen)
        await wait_until(pilot, lambda: run.finished)
        assert [(r.vm_id, r.ok) for r in run.results] == [("sim/db-01", True)]
        assert not rig.agent("sim/db-01").frozen and rig.engine.holds() == []


# -- outcomes the engine cannot promise ---------------------------------------------------------


async def test_failed_and_unknown_freeze_outcomes_are_shown_per_vm(make_rig: MakeRig) -> None:
    rig = await make_rig(session="per-poll")  # no journal: no keeper can be armed
    engine = rig.engine
    app = QgadashApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01", "sim/db-02", "sim/web-03"))
        dialog = await open_freeze_dialog(pilot, app, {"sim/db-01", "sim/db-02", "sim/web-03"})
        text = screen_text(app)
        assert "No keeper for 3 VMs: only this qgadash will thaw them" in text
        assert "sim/db-01 (no hold journal (the local keeper needs one))" in text
        # Between the confirmation and the freeze: db-02's agent stops answering (the
        # freeze is never sent), web-03 closes every connection (sent, outcome unknown).
        rig.agent("sim/db-02").fault = Fault.SILENT
        rig.agent("sim/web-03").fault = Fault.ACCEPT_CLOSE
        run = await freeze_from_dialog(pilot, app, dialog, "600")
        assert outcome_of(run, "sim/db-01") == "frozen"
        assert outcome_of(run, "sim/db-02") == "failed"
        assert outcome_of(run, "sim/web-03") == "unknown"
        shown = screen_text(app)
        assert "1 frozen  1 failed  1 unknown" in shown
        assert "no reply" in shown and "outcome unknown" in shown
        # What may be frozen stays ours: web-03 is held until a poll says it is thawed.
        assert sorted(engine.frozen_by_us()) == ["sim/db-01", "sim/web-03"]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.fleet.table.get_cell("sim/web-03", "fs").plain == "?")
        assert "❄ 2 frozen" in header(app)
        rig.agent("sim/db-02").fault = Fault.NONE
        rig.agent("sim/web-03").fault = Fault.NONE
        await wait_until(pilot, lambda: engine.frozen_by_us() == ["sim/db-01"])
        await wait_until(pilot, lambda: "❄ 1 frozen" in header(app))


async def test_a_failed_deadline_thaw_stays_red_until_thawed_or_dismissed(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(session="per-poll")
    engine = rig.engine
    app = QgadashApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01", "sim/db-02", "sim/web-03"))
        results = await engine.freeze(["sim/db-01", "sim/db-02"], thaw_after=1.0)
        assert all(r.ok for r in results)
        # The link is cut after the freeze: the deadline thaw cannot get through.
        rig.agent("sim/db-01").fault = Fault.ACCEPT_CLOSE
        rig.agent("sim/db-02").fault = Fault.ACCEPT_CLOSE
        table = app.fleet.table

        def thaw_failed(vm: str) -> bool:
            return table.get_cell(vm, "fs").plain == "THAW FAILED"

        for vm in ("sim/db-01", "sim/db-02"):
            await wait_until(pilot, partial(thaw_failed, vm))
            await wait_until(pilot, partial(row_is_red, app, vm))
        assert not row_is_red(app, "sim/web-03")
        # The header follows within a frame (a row is drawn from the store when shown).
        await wait_until(pilot, lambda: "✖ 2 thaw failed" in header(app))
        table.move_to("sim/db-01")
        await wait_until(pilot, lambda: "THAW FAILED:" in screen_text(app))
        # Still red a while later: the guard keeps retrying, the row keeps saying so.
        await pilot.pause(1.0)
        assert row_is_red(app, "sim/db-01") and row_is_red(app, "sim/db-02")
        # db-02's link comes back: the retry thaws it and its row is plain again.
        rig.agent("sim/db-02").fault = Fault.NONE
        await wait_until(pilot, lambda: not rig.agent("sim/db-02").frozen, timeout=10)
        await wait_until(pilot, lambda: not row_is_red(app, "sim/db-02"))
        assert row_is_red(app, "sim/db-01")
        # db-01: the operator takes it over (x): no failed thaw, the hold gone. (The row
        # stays red while its agent is unreachable: a fault row takes its state's colour.)
        await pilot.press("x")
        await wait_until(pilot, lambda: table.get_cell("sim/db-01", "fs").plain != "THAW FAILED")
        assert engine.frozen_by_us() == []
        assert "thaw failed" not in header(app)
        assert rig.agent("sim/db-01").frozen  # dismissed, not thawed: the operator knows


async def test_quit_when_the_thaw_fails_stay_then_quit_once_it_works(make_rig: MakeRig) -> None:
    rig = await make_rig(session="per-poll")
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        assert (await rig.engine.freeze(["sim/db-01"], thaw_after=600))[0].ok
        rig.agent("sim/db-01").fault = Fault.ACCEPT_CLOSE
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await click(pilot, app, "#confirm")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen), timeout=10)
        text = screen_text(app)
        assert "Thaw failed" in text and "1 VMs could not be thawed" in text
        assert "sim/db-01" in text
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        assert str(app.focused.label) == "Stay (retry on next quit)"
        await pilot.press("enter")  # Stay
        await wait_until(pilot, lambda: app.screen is app.fleet)
        assert app.is_running and rig.engine.frozen_by_us() == ["sim/db-01"]
        await wait_until(pilot, lambda: row_is_red(app, "sim/db-01"))
        # The link is back; quitting again thaws and exits cleanly.
        rig.agent("sim/db-01").fault = Fault.NONE
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await click(pilot, app, "#confirm")
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    assert not rig.agent("sim/db-01").frozen
    assert app.return_code == 0


async def test_quit_anyway_after_a_failed_thaw_exits_1(make_rig: MakeRig) -> None:
    rig = await make_rig(session="per-poll")
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: rig.answering("sim/db-01"))
        assert (await rig.engine.freeze(["sim/db-01"], thaw_after=600))[0].ok
        rig.agent("sim/db-01").fault = Fault.SILENT
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitScreen))
        await click(pilot, app, "#confirm")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen), timeout=10)
        await click(pilot, app, "#confirm")  # Quit anyway
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    assert app.return_value == 1  # run_app turns the failed thaw into exit status 1
    assert rig.agent("sim/db-01").frozen


# -- what an earlier qgadash left -------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


async def test_the_header_says_while_an_earlier_runs_holds_are_settled(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig(journal=True, session="per-poll")
    assert rig.journal is not None
    rig.agent("sim/db-01").handle({"execute": "guest-fsfreeze-freeze"})
    assert rig.agent("sim/db-01").frozen
    # A qgadash that died (its pid is gone) owed this thaw a minute ago.
    rig.journal.write(
        HoldRecord(
            new_token(),
            "sim/db-01",
            Reach("sim", str(rig.fleet.socket_path("db-01"))),
            time.time() - 60,
            NO_KEEPER,
            Owner(dead_pid(), None, socket.gethostname()),
            time.time() - 120,
        )
    )
    # Hold the settling thaw until the test has seen the header say so.
    gate = asyncio.Event()
    thaw_record = rig.engine._thaw_record

    async def gated(record: HoldRecord) -> None:
        await gate.wait()
        await thaw_record(record)

    monkeypatch.setattr(rig.engine, "_thaw_record", gated)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "⟳ settling holds of an earlier run" in header(app))
        await pilot.pause(0.5)
        assert "settling" in header(app) and rig.agent("sim/db-01").frozen
        gate.set()
        await wait_until(pilot, lambda: "settling" not in header(app), timeout=10)
        assert not rig.agent("sim/db-01").frozen
        assert rig.journal.load() == ([], [])
        assert any(
            "sim/db-01: thawed (owed by an earlier qgadash)" in str(n.message)
            for n in app._notifications
        )
