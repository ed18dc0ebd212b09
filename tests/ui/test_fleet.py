"""The fleet screen driven by keys (Pilot), against an in-memory engine.

Freezing, thawing, deadline thaws and quitting are the engine's behaviour: they are
tested on the real engine, with simulated guests, in test_freeze_on_engine.py."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from qgadash.fleet.model import AgentState
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.help import HelpScreen
from qgadash.ui.screens.modals import ActionRunScreen, ConfirmActionScreen, PowerScreen

from .conftest import SIZE, MakeApp, MakeEngine, MakeSimRig, linux_vms, snapshot_of
from .fakes import NOW, FakeClock, FakeEngine
from .screen import screen_text, wait_until


async def type_filter(pilot: Pilot[Any], text: str) -> None:
    await pilot.press("slash")
    for ch in text:
        await pilot.press("space" if ch == " " else "exclamation_mark" if ch == "!" else ch)
    await pilot.press("enter")
    await pilot.pause()


async def test_filter_matches_substring_and_bang_inverts(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert len(app.fleet.table.order) == 24
        await type_filter(pilot, "db")
        shown = list(app.fleet.table.order)
        assert shown and all("db" in vm for vm in shown)
        app.fleet.set_filter("!db")
        await pilot.pause()
        inverted = list(app.fleet.table.order)
        assert inverted and not any("db" in vm for vm in inverted)
        assert len(shown) + len(inverted) == 24
        assert f"{len(inverted)} shown" in screen_text(app)


async def test_filter_by_tag_glob_ip_and_os(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.fleet
        snaps = engine.store.snapshots()

        async def shown_for(text: str) -> set[str]:
            fleet.set_filter(text)
            await pilot.pause()
            return set(fleet.table.order)

        lab = {s.id for s in snaps if "lab" in s.ref.tags}
        assert lab and await shown_for("tag:lab") == lab
        hv2_web = {s.id for s in snaps if s.id.startswith("hv2/web-")}
        assert hv2_web and await shown_for("hv2/web-*") == hv2_web
        fleet.set_filter("10.0.1.13")
        await pilot.pause()
        assert list(fleet.table.order) == ["hv1/web-03"]
        fleet.set_filter("windows")
        await pilot.pause()
        assert set(fleet.table.order) == {"hv3/web-05", "hv3/web-17"}
        prod_not_db = {s.id for s in snaps if "prod" in s.ref.tags and "db" not in s.ref.tags}
        assert prod_not_db and await shown_for("tag:prod !tag:db") == prod_not_db


async def test_marks_survive_filtering_and_actions_use_them(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        first, second = table.order[0], table.order[1]
        await pilot.press("space", "space")
        assert app.fleet.marks == {first, second}
        await type_filter(pilot, "hv3")
        assert first not in table.order and second not in table.order
        assert app.fleet.marks == {first, second}
        assert "2 marked (2 hidden)" in screen_text(app)
        ids, how = app.fleet.targets()
        assert ids == sorted([first, second]) and how == "2 marked VMs"
        app.fleet.set_filter("")
        await pilot.pause()
        assert table.get_cell(first, "mark").plain == "✓"


async def test_escape_clears_the_filter_and_every_mark_survives_it(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_filter("hv3")
        await pilot.pause()
        await pilot.press("a")
        marked = set(app.fleet.table.order)
        assert marked and app.fleet.marks == marked
        await pilot.press("slash", "escape")  # leave the filter field: the reflex
        await pilot.press("escape")  # and again on the table: the filter goes
        await pilot.pause()
        assert len(app.fleet.table.order) == 24
        assert app.fleet.marks == marked  # marks are never Esc's business
        await pilot.press("escape")
        assert app.fleet.marks == marked


async def test_faults_only_toggle(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("z")
        shown = [snapshot_of(engine.store, v) for v in app.fleet.table.order]
        assert shown
        assert all(
            s.agent in (AgentState.TIMEOUT, AgentState.UNREACHABLE, AgentState.ERROR)
            or s.thaw_error
            for s in shown
        )
        await pilot.press("z")
        assert len(app.fleet.table.order) == 24


async def test_sort_keeps_cursor_on_same_vm(make_engine: MakeEngine, make_app: MakeApp) -> None:
    app = make_app(make_engine(300))
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        await pilot.press("pagedown", "pagedown", "pagedown")
        for _ in range(10):
            await pilot.press("down")
        await pilot.pause()
        vm = table.cursor_vm
        for _ in range(len(table.columns)):
            await pilot.press("s")
            await pilot.pause()
            assert table.cursor_vm == vm
        app.fleet.sort_by("vm", False)
        await pilot.pause()
        line = table.cursor_row - round(table.scroll_y)
        assert 0 < line < 40
        await pilot.press("S")  # reverse: the VM moves far down the list, and stays on its line
        await pilot.pause()
        assert table.cursor_vm == vm
        assert table.cursor_row - round(table.scroll_y) == line


async def test_live_updates_change_cells_in_place_and_keep_the_cursor(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        app.fleet.sort_by("rtt", False)
        await pilot.press("down", "down", "down")
        vm = table.cursor_vm
        assert vm is not None
        # Every latency changes: the order changes, the cursor follows its VM.
        for snap in engine.store.snapshots():
            if snap.latency_ms is not None:
                engine.store.update(snap.id, latency_ms=1000 - snap.latency_ms)
        web00 = snapshot_of(engine.store, "hv1/web-00")
        engine.store.update(
            "hv1/web-00", facts=dataclasses.replace(web00.facts, hostname="renamed-00")
        )
        await wait_until(pilot, lambda: table.get_cell("hv1/web-00", "host").plain == "renamed-00")
        assert table.cursor_vm == vm
        # A VM leaves; another arrives.
        engine.store.remove("hv1/web-12")
        new = dataclasses.replace(
            snapshot_of(engine.store, "hv1/web-00"),
            ref=dataclasses.replace(snapshot_of(engine.store, "hv1/web-00").ref, name="web-99"),
        )
        engine.store.put(new)
        await wait_until(pilot, lambda: "hv1/web-99" in table.order)
        assert "hv1/web-12" not in table.order
        assert table.cursor_vm == vm


async def test_hostile_hostname_is_shown_literally(
    make_engine: MakeEngine, make_app: MakeApp
) -> None:
    app = make_app(make_engine(hostile=True))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "[bold]x[/]␛[31m" in text
        assert "\x1b" not in text and "\u202e" not in text
        app.fleet.table.move_to("hv1/evil")
        await pilot.press("enter")
        # The detail screen renders a few frames later under load.
        await wait_until(pilot, lambda: "[bold]x[/]␛[31mred�evil" in screen_text(app))


async def test_header_counts_states_and_names_down_hypervisors(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "3 hypervisors (2 connected, 1 down)" in text
        assert "hv3 host-key-rejected: ssh: host key changed for hv3.example.net" in text
        assert "▲ 2 timeout" in text and "✖ 2 unreachable" in text


# -- freeze and thaw ---------------------------------------------------------------------


async def test_freeze_cannot_be_confirmed_before_the_dialog_names_the_keepers(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    """A keeper check that takes its time (a hypervisor probed over SSH) holds the
    confirm button back: nobody freezes before being told who thaws if qgadash dies."""
    engine.keeper_gate = asyncio.Event()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_marks({"hv1/web-00", "hv2/db-04"})
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmActionScreen))
        confirm = app.screen.query_one("#confirm", Button)
        await wait_until(pilot, lambda: "checking where a keeper can be armed" in screen_text(app))
        assert confirm.disabled
        await pilot.click("#confirm")
        await pilot.press("tab", "enter")
        assert isinstance(app.screen, ConfirmActionScreen) and engine.calls == []
        engine.keeper_gate.set()
        await wait_until(pilot, lambda: not confirm.disabled)
        text = screen_text(app)
        assert "local keeper (this machine) for 1 VM: hv1/web-00" in text
        assert "keeper on hypervisor hv2 for 1 VM: hv2/db-04" in text
        assert "checking" not in text


# -- power ----------------------------------------------------------------------------------


async def test_power_modal_defaults_to_cancel(make_sim_rig: MakeSimRig) -> None:
    rig = await make_sim_rig(linux_vms("web-00"))
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
        await wait_until(pilot, lambda: isinstance(app.focused, Button))
        assert isinstance(app.focused, Button) and app.focused.id == "cancel"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.fleet)
        await app.workers.wait_for_complete()
        assert not rig.agent("sim/web-00").powered_off
        snap = snapshot_of(rig.engine.store, "sim/web-00")
        assert snap.agent is AgentState.OK and snap.lifecycle is None


async def test_power_offers_only_what_the_agents_can_do(make_sim_rig: MakeSimRig) -> None:
    rig = await make_sim_rig(linux_vms("web-00", disabled=frozenset({"guest-suspend-hybrid"})))
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        app.fleet.table.move_to("sim/web-00")
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PowerScreen))
        screen = app.screen
        await wait_until(pilot, lambda: bool(screen.query("#confirm")))  # composed
        assert screen.query_one("#power-hybrid").disabled
        assert not screen.query_one("#power-reboot").disabled
        assert "guest-suspend-hybrid is disabled by the guest's policy" in screen_text(app)
        await pilot.press("2")  # reboot
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: isinstance(app.screen, ActionRunScreen))
        run = app.screen
        assert isinstance(run, ActionRunScreen)
        await wait_until(pilot, lambda: run.finished, timeout=20)
        assert [(r.vm_id, r.ok) for r in run.results] == [("sim/web-00", True)], run.results
        # The engine remembers this session rebooted it (the row says so while it is away).
        lifecycle = snapshot_of(rig.engine.store, "sim/web-00").lifecycle
        assert lifecycle is not None and lifecycle.action == "reboot"


# -- read-only --------------------------------------------------------------------------------


async def test_read_only_hides_every_action(make_sim_rig: MakeSimRig) -> None:
    rig = await make_sim_rig(linux_vms("web-00", "db-01"), read_only=True)
    app = QgadashApp(rig.engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, rig.answering, timeout=30)
        text = screen_text(app)
        assert "READ-ONLY" in text
        footer = text.splitlines()[-1]
        for word in ("Freeze", "Thaw", "Power"):
            assert word not in footer
        app.fleet.set_marks({"sim/web-00", "sim/db-01"})
        for key in ("f", "t", "p", "x"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.fleet
        from qgadash.ui.commands import palette_entries

        names = [e.name for e in palette_entries(app)]
        assert names and not any(n.startswith(("Freeze", "Thaw", "Power")) for n in names)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_text = screen_text(app)
        assert "Freeze" not in help_text and "Power" not in help_text
        await app.workers.wait_for_complete()
        for name in ("web-00", "db-01"):  # nothing reached the guests
            agent = rig.agent(f"sim/{name}")
            assert not agent.powered_off and not agent.frozen


# -- quitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("binding_key", ["F"])
async def test_keys_rebind_from_settings(
    make_engine: MakeEngine, make_app: MakeApp, binding_key: str
) -> None:
    engine = make_engine(keys={"freeze": binding_key})
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await pilot.pause()
        assert app.screen is app.fleet
        await pilot.press(binding_key)
        await pilot.pause()
        assert isinstance(app.screen, ConfirmActionScreen)


async def test_jump_to_vm_by_id_clears_a_hiding_filter(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_filter("db")
        await pilot.pause()
        await pilot.press("colon")
        for ch in "hv3/web-17":
            await pilot.press(ch)
        await pilot.press("enter")
        await pilot.pause()
        assert app.fleet.table.cursor_vm == "hv3/web-17"
        assert not app.fleet.filter


async def test_a_key_pressed_as_the_dashboard_opens_reaches_the_table(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    """Textual starts an auto-pilot eagerly on Python 3.12+, before deferred focus
    changes land: a `p` typed at once must open Power, not go into the filter."""
    app = make_app(engine)
    seen: dict[str, object] = {}

    async def first_keys(pilot: Pilot[Any]) -> None:
        await pilot.press("p")
        await wait_until(pilot, lambda: app.screen is not app.fleet or app.fleet.filter.text)
        seen["screen"], seen["filter"] = app.screen, app.fleet.filter.text
        app.exit()

    await app.run_async(headless=True, size=SIZE, auto_pilot=first_keys)
    assert isinstance(seen["screen"], PowerScreen), seen
    assert seen["filter"] == ""


async def test_the_fleet_screen_resumes_with_the_table_focused(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    """Back from a dialog with nothing focused, keys go to the table, not the filter."""
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_focus(None)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: app.screen is not app.fleet)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.fleet)
        assert app.focused is app.fleet.table
        await pilot.press("p")
        await wait_until(pilot, lambda: app.screen is not app.fleet)
        assert isinstance(app.screen, PowerScreen)
        assert app.fleet.filter.text == ""
        # Composed before the test ends: an app torn down while the dialog mounts fails
        # the dialog's on_mount (its buttons are gone), which fails the test under load.
        await wait_until(pilot, lambda: bool(app.screen.query("#confirm")))


async def test_help_lists_every_binding(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert isinstance(app.screen, HelpScreen)
        text = app.screen._text().plain  # the whole help, not only what is on screen
        for desc in (
            "Filter",
            "Mark shown",
            "Freeze",
            "Thaw",
            "Power",
            "Files",
            "Faults only",
            "Jump",
            "Download",
            "Upload",
            "Follow",
            "Overview",
        ):
            assert desc in text, desc
        assert "[freeze]" in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.fleet)


async def test_clock_drives_last_seen(
    engine: FakeEngine, make_app: MakeApp, clock: FakeClock
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        # Polled a second ago: fresh, one value until 10 s (not a rewrite every second).
        assert app.fleet.table.get_cell("hv1/web-00", "seen").plain == "<10s"
        clock.advance(5)
        app.fleet.tick()  # what the 4 Hz timer does
        assert app.fleet.table.get_cell("hv1/web-00", "seen").plain == "<10s"
        clock.advance(10)
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("hv1/web-00", "seen").plain == "10s"
        )
        clock.advance(105)  # 121 s
        await wait_until(
            pilot, lambda: app.fleet.table.get_cell("hv1/web-00", "seen").plain == "2m"
        )
        assert clock() > NOW


async def test_a_narrow_terminal_drops_the_least_needed_columns_and_a_wide_one_restores_them(
    make_engine: MakeEngine, make_app: MakeApp
) -> None:
    engine = make_engine(300)
    app = make_app(engine)
    async with app.run_test(size=(90, 30)) as pilot:
        table = app.fleet.table
        await wait_until(pilot, lambda: len(table.order) == len(engine.store))
        assert "hv" not in table.shown_columns and "load" not in table.shown_columns
        assert {"vm", "agent", "ip", "fs", "seen"} <= set(table.shown_columns)
        # What is shown fits: nothing needs scrolling sideways.
        assert table.virtual_size.width <= table.scrollable_content_region.width
        await pilot.press("down", "down", "down")
        vm = table.cursor_vm
        assert vm is not None
        assert "SEEN" in screen_text(app)

        await pilot.resize_terminal(200, 50)
        await wait_until(pilot, lambda: "hv" in table.shown_columns)
        assert table.cursor_vm == vm
        assert len(table.order) == len(engine.store)
        assert table.get_cell(vm, "hv").plain == vm.split("/")[0]
        # Live updates still reach the rebuilt table.
        snap = snapshot_of(engine.store, vm)
        engine.store.update(vm, facts=dataclasses.replace(snap.facts, hostname="renamed"))
        await wait_until(pilot, lambda: table.get_cell(vm, "host").plain == "renamed")

        await pilot.resize_terminal(90, 30)
        await wait_until(pilot, lambda: "hv" not in table.shown_columns)
        assert table.cursor_vm == vm
