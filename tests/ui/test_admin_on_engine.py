"""The guest administration verbs from the dashboard, on the real engine with simulated
guests: clock sync, password (masked dialog, nothing in the audit), SSH keys (each VM's
diff before the change), vCPUs; Cancel first, every VM's outcome, the palette offers
only the reading ones in read-only mode."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input

from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.ui import admin_verbs
from qgadash.ui.admin_dialogs import PasswordScreen
from qgadash.ui.app import QgadashApp
from qgadash.ui.commands import palette_entries
from qgadash.ui.screens.files import PromptScreen
from qgadash.ui.screens.modals import ActionRunScreen, ConfirmActionScreen, MessageScreen

from .conftest import SIZE
from .screen import screen_text, wait_until

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDashboard17 ops@laptop"
SECRET = "dashboard-S3cret-17"
IDS = ["sim/a", "sim/b", "sim/old"]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[FleetEngine]:
    linux = [dataclasses.replace(p, vcpus=4) for p in map(make_profile, range(40)) if not p.windows]
    vms = [
        SimVm("a", linux[0]),
        SimVm("b", linux[1]),
        SimVm("old", dataclasses.replace(linux[2], agent_version="5.1.0")),
    ]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        # A request timeout a loaded machine keeps (1 s failed requests under CI load).
        hosts = sim.write_hosts_toml(tmp_path / "hosts.toml", poll_interval=0.3, timeout=3.0)
        eng = FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "audit.jsonl"))
        try:
            yield eng
        finally:
            await eng.stop()


def answering(engine: FleetEngine) -> bool:
    snaps = [engine.store.get(i) for i in IDS]
    return all(s is not None and s.agent is AgentState.OK for s in snaps)


async def confirm(pilot: Pilot[Any], app: QgadashApp) -> None:
    await wait_until(pilot, lambda: bool(app.screen.query("#confirm")))
    await wait_until(pilot, lambda: isinstance(app.focused, Button))
    assert isinstance(app.focused, Button) and app.focused.id == "cancel"
    app.screen.query_one("#confirm", Button).press()


async def run_to_end(pilot: Pilot[Any], app: QgadashApp) -> ActionRunScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
    run = app.screen
    assert isinstance(run, ActionRunScreen)
    await wait_until(pilot, lambda: run.finished, timeout=20)
    return run


def detail(run: ActionRunScreen, vm_id: str) -> str:
    return str(run.query_one("#results", DataTable).get_cell(vm_id, "detail"))


async def test_clock_and_vcpus_on_marked_vms(engine: FleetEngine) -> None:
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.set_marks(set(IDS))
        entry = next(e for e in palette_entries(app) if e.name.startswith("Sync the clock of 3"))
        entry.run()
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert all(r.ok for r in run.results) and len(run.results) == 3
        assert detail(run, "sim/a").startswith("drift ")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ActionRunScreen))
        await pilot.pause()

        admin_verbs.prompt_vcpus(app, IDS, "3 marked VMs")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await wait_until(pilot, lambda: bool(app.screen.query("#count")))
        app.screen.query_one("#count", Input).value = "2"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert detail(run, "sim/a") == "2 of 4 online (offline: 2,3)"
        assert detail(run, "sim/old") == "2 of 4 online (offline: 2,3)"  # 5.1 has set-vcpus


async def test_password_from_the_masked_dialog_never_in_the_audit(
    engine: FleetEngine, tmp_path: Path
) -> None:
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        admin_verbs.prompt_password(app, ["sim/a", "sim/b"], "2 marked VMs")
        await wait_until(pilot, lambda: isinstance(app.screen, PasswordScreen))
        await wait_until(pilot, lambda: bool(app.screen.query("#again")))
        dialog = app.screen
        assert app.focused is not None and app.focused.id == "cancel"
        assert dialog.query_one("#password", Input).password
        dialog.query_one("#user", Input).value = "root"
        dialog.query_one("#password", Input).value = SECRET
        dialog.query_one("#again", Input).value = SECRET + "x"
        dialog.query_one("#confirm", Button).press()
        await pilot.pause()
        assert isinstance(app.screen, PasswordScreen) and "differ" in screen_text(app)
        assert SECRET not in screen_text(app)
        dialog.query_one("#again", Input).value = SECRET
        dialog.query_one("#confirm", Button).press()
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert [r.ok for r in run.results] == [True, True]
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"action": "password"' in audit and SECRET not in audit


async def test_ssh_keys_diff_then_add_and_old_agent_skipped(engine: FleetEngine) -> None:
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        admin_verbs.prompt_ssh_keys(app, IDS, "3 marked VMs", remove=False)
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await wait_until(pilot, lambda: bool(app.screen.query("#keys")))
        app.screen.query_one("#keys", Input).value = KEY
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        await wait_until(pilot, lambda: f"+ {KEY}" in screen_text(app))  # drawn a frame later
        text = screen_text(app)
        assert "sim/old  skipped: this agent has no guest-ssh-add-authorized-keys" in text
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        assert [detail(run, i) for i in ("sim/a", "sim/b")] == ["1 added, 0 removed"] * 2
        await pilot.press("escape")
    listed = await engine.admin.ssh_keys(["sim/a", "sim/b"], "root")
    assert [r.value for r in listed] == [[KEY], [KEY]]


async def test_read_only_palette_offers_only_the_reading_verbs(
    engine: FleetEngine,
) -> None:
    engine.config = dataclasses.replace(
        engine.config, settings=dataclasses.replace(engine.config.settings, read_only=True)
    )
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.set_marks({"sim/a"})
        names = [e.name for e in palette_entries(app)]
        assert "SSH keys on 1 marked VM…" in names and "vCPUs of 1 marked VM" in names
        assert not [n for n in names if n.startswith(("Sync", "Set a password", "Add SSH"))]
        admin_verbs.confirm_time_sync(app, ["sim/a"], "this VM")  # refused with a message
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmActionScreen)


async def test_details_show_live_cpu_and_disk_sparklines(engine: FleetEngine) -> None:
    from textual.widgets import Static

    from qgadash.ui.screens.detail import DetailScreen

    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.open_details("sim/a")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))

        def live() -> str:
            found = app.screen.query("#live-body")
            return str(found.first(Static).content) if found else ""

        # Samples every poll interval (0.3 s here); rates once two are in.
        await wait_until(pilot, lambda: "cpu" in live() and "vda" in live(), timeout=30)
        text = live()
        assert "%" in text and "read" in text and "write" in text and "/s" in text
        await pilot.press("escape")
        # An agent without the counters (qemu-ga 5.1) shows no live section at all.
        app.open_details("sim/old")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await wait_until(pilot, lambda: bool(app.screen.query("#live-body")))
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        await wait_until(
            pilot,
            lambda: (
                screen._sampler is not None
                and not (screen._sampler.has_cpu or screen._sampler.has_disks)
            ),
            timeout=15,
        )
        assert live() == ""


async def test_clock_set_to_the_operators_time(engine: FleetEngine) -> None:
    import time

    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.fleet.set_marks({"sim/a"})
        entry = next(e for e in palette_entries(app) if e.name.startswith("Set the clock of 1"))
        entry.run()
        await wait_until(pilot, lambda: bool(app.screen.query("#when")))
        app.screen.query_one("#when", Input).value = str(int(time.time()) + 3600)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        await confirm(pilot, app)
        run = await run_to_end(pilot, app)
        after = run.results[0].value
        assert isinstance(after, str) and after.startswith("drift ")
        assert 3590 < float(after.split("-> ")[1].split(" ")[0]) < 3610, after
