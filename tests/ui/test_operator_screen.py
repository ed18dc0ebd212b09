"""The fleet screen as an operator drives it (issue 14): input that reaches the right
thing, a filter on what the rows show, marks that only their own key clears, sorting by
a column with an arrow, vim/k9s navigation, help with a legend, one palette entry per
thing, the theme remembered, screenshots that say where they went."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.color import Color
from rich.text import Text
from textual import events
from textual.widgets import Button, Input

from qgadash.agent.replies import Interface, IpAddress
from qgadash.fleet.model import AgentState, VmRef, VmSnapshot
from qgadash.ui.app import QgadashApp
from qgadash.ui.fleet_view import COLUMN_INDEX, COLUMNS, Palette, render_cell, row_values
from qgadash.ui.preferences import preferences_path
from qgadash.ui.screens.files import FilesScreen
from qgadash.ui.screens.help import HelpScreen
from qgadash.ui.screens.modals import MessageScreen, PowerScreen
from qgadash.ui.verbs import take_screenshot

from .conftest import SIZE, MakeApp, snapshot_of
from .fakes import NOW, FakeEngine, linux_facts, mixed_fleet
from .screen import screen_text, wait_until


def burst(app: QgadashApp, keys: str) -> None:
    """Keys as a paste or a laggy SSH link deliver them: all queued before the first is
    handled (Pilot.press waits after each key, which hides the bug)."""
    names = {"/": "slash", " ": "space"}
    for ch in keys:
        app.post_message(events.Key(names.get(ch, ch), ch))


# -- input that reaches the right thing -----------------------------------------------------


async def test_keys_typed_in_one_burst_after_slash_all_land_in_the_filter(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        burst(app, "/prod")  # p would open the power menu
        await pilot.pause()
        await pilot.pause(0.1)
        field = app.fleet.query_one("#filter-input", Input)
        assert field.value == "prod"
        assert app.focused is field
        assert not isinstance(app.screen, PowerScreen)
        await pilot.press("escape")  # leave the field
        app.fleet.set_filter("")
        await pilot.pause()
        burst(app, "/web")  # b would open the files pane
        await pilot.pause()
        await pilot.pause(0.1)
        assert field.value == "web" and app.screen is app.fleet
        assert not isinstance(app.screen, FilesScreen)


def snapshot_with_ipv6(name: str, ipv6: str) -> VmSnapshot:
    facts = linux_facts(40, hostname=name)
    eth = Interface(
        "eth0",
        "52:54:00:00:00:40",
        (IpAddress("10.9.0.40", 24, "ipv4"), IpAddress(ipv6, 64, "ipv6")),
        None,
    )
    facts = dataclasses.replace(facts, interfaces=(eth,))
    return VmSnapshot(VmRef("demo", name, f"/run/{name}.sock"), AgentState.OK, None, 0.5,
                      NOW - 1, NOW - 1, facts)  # fmt: skip


async def test_the_filter_matches_what_the_row_shows_hidden_fields_need_a_prefix(
    make_app: MakeApp,
) -> None:
    web = snapshot_with_ipv6("web-218", "fd00::db")
    db = snapshot_with_ipv6("db-01", "fd00::1")
    engine = FakeEngine([web, db])
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.fleet.set_filter("db")
        await pilot.pause()
        assert list(app.fleet.table.order) == ["demo/db-01"]  # not web-218's fd00::db
        await pilot.press("a")
        assert app.fleet.marks == {"demo/db-01"}
        app.fleet.set_filter("ip:fd00::db")
        await pilot.pause()
        assert list(app.fleet.table.order) == ["demo/web-218"]
        app.fleet.set_filter("10.9.0.40")  # the IPv4 the row shows
        await pilot.pause()
        assert set(app.fleet.table.order) == {"demo/web-218", "demo/db-01"}


async def test_unmark_all_is_its_own_key_and_asks_when_marks_are_hidden(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        fleet = app.fleet
        fleet.set_filter("hv3")
        await pilot.pause()
        await pilot.press("a")
        hv3 = set(fleet.marks)
        fleet.set_filter("hv1")
        await pilot.pause()
        await pilot.press("space")  # one shown, the others hidden
        assert len(fleet.marks) == len(hv3) + 1
        await pilot.press("ctrl+backslash")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        text = screen_text(app)
        assert f"{len(hv3)} of them are hidden by the filter" in text
        assert app.focused is app.screen.query_one("#cancel", Button)
        await pilot.press("enter")  # Cancel
        await wait_until(pilot, lambda: app.screen is fleet)
        assert len(fleet.marks) == len(hv3) + 1
        await pilot.press("ctrl+backslash")
        await wait_until(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.click("#confirm")
        await wait_until(pilot, lambda: not fleet.marks)
        # Every mark on screen: no question, they go at once.
        await pilot.press("space")
        await pilot.press("ctrl+backslash")
        await pilot.pause()
        assert app.screen is fleet and not fleet.marks


# -- sorting and moving ------------------------------------------------------------------------


def header_line(app: QgadashApp) -> str:
    return next(line for line in screen_text(app).splitlines() if " VM" in line and "AGENT" in line)


async def test_shift_letter_sorts_by_that_column_with_an_arrow_numbers_biggest_first(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "VM▲" in header_line(app)
        await pilot.press("U")  # FULL
        await pilot.pause()
        assert app.fleet.sort_column == "full" and app.fleet.sort_reverse
        assert "FULL▼" in header_line(app) and "VM▲" not in header_line(app)
        fulls = [
            snapshot_of(engine.store, v).facts.fullest_filesystem for v in app.fleet.table.order
        ]
        used = [f.used_fraction for f in fulls if f is not None and f.used_fraction is not None]
        assert used == sorted(used, reverse=True)
        await pilot.press("U")  # again: the other way
        await pilot.pause()
        assert "FULL▲" in header_line(app) and not app.fleet.sort_reverse
        await pilot.press("N")  # HOSTNAME: text, A to Z first
        await pilot.pause()
        assert app.fleet.sort_column == "host" and "HOSTNAME▲" in header_line(app)


async def test_a_header_click_sorts_and_vm_names_sort_naturally(make_app: MakeApp) -> None:
    snaps = [
        VmSnapshot(VmRef("hv1", n, f"/run/{n}.sock"), AgentState.OK, None, 0.5, NOW, NOW,
                   linux_facts(i, hostname=n))
        for i, n in enumerate(["app-104", "app-05", "app-2", "app-10"])
    ]  # fmt: skip
    app = make_app(FakeEngine(snaps))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert list(app.fleet.table.order) == ["hv1/app-2", "hv1/app-05", "hv1/app-10",
                                               "hv1/app-104"]  # fmt: skip
        await pilot.click("#fleet-table", offset=(4, 0))  # the VM header: reverse
        await pilot.pause()
        assert app.fleet.table.order[0] == "hv1/app-104"
        assert "VM▼" in header_line(app)


async def test_vim_and_k9s_keys_move_the_cursor(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        await pilot.pause()
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == len(table.order) - 1
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("end")
        assert table.cursor_row == len(table.order) - 1
        await pilot.press("home")
        assert table.cursor_row == 0


# -- colours -------------------------------------------------------------------------------


def colours(text: Text) -> set[Color]:
    found: set[Color] = set()
    for span in text.spans:
        style = span.style
        if not isinstance(style, str) and style.color is not None:
            found.add(style.color)
    return found


def test_a_faulty_row_takes_its_state_colour_in_every_cell() -> None:
    palette = Palette()
    snaps = {s.agent: s for s in mixed_fleet(24)[0] if s.thaw_error is None}
    for state, style in (
        (AgentState.TIMEOUT, palette.warning),
        (AgentState.UNREACHABLE, palette.error),
        (AgentState.ERROR, palette.error),
    ):
        for i, value in enumerate(row_values(snaps[state], NOW, marked=False)):
            cell = render_cell(i, value, palette)
            if cell.plain.strip():
                assert colours(cell) == {style.color}, (state, COLUMNS[i].key, cell.spans)
    ok = row_values(snaps[AgentState.OK], NOW, marked=False)
    vm = COLUMN_INDEX["vm"]
    assert palette.warning.color not in colours(render_cell(vm, ok[vm], palette))


# -- help, palette, theme, screenshot --------------------------------------------------------


async def test_help_explains_columns_and_symbols(engine: FakeEngine, make_app: MakeApp) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert isinstance(app.screen, HelpScreen)
        text = app.screen._text().plain
        for term, meaning in (
            ("FULL", "fullest filesystem"),
            ("SEEN", "time since the agent last answered"),
            ("● ▲ ✖ !", "ok, timeout, unreachable, error"),
            ("❄", "frozen"),
            ("^\\", "Unmark all"),
        ):
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(term)), "")
            assert meaning in line, (term, line)
        assert "sort by VM, HV, AGENT" in text


async def test_one_keys_entry_in_the_palette_and_it_opens_our_help(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    from qgadash.ui.commands import palette_entries

    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        ours = [e.name for e in palette_entries(app)]
        keys = [t for t in titles + ours if t.startswith("Keys")]
        assert keys == ["Keys"]
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Keys")
        command.callback()
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))


async def test_the_chosen_theme_is_remembered_for_the_next_start(
    engine: FakeEngine, make_app: MakeApp
) -> None:
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "qgadash-dark"
        app.theme = "qgadash-light"
        await pilot.pause()
    assert json.loads(preferences_path().read_text())["theme"] == "qgadash-light"
    again = make_app(engine)
    async with again.run_test(size=SIZE):
        assert again.theme == "qgadash-light"
    chosen = make_app(engine, theme="qgadash-high-contrast")  # --theme still wins
    async with chosen.run_test(size=SIZE):
        assert chosen.theme == "qgadash-high-contrast"


async def test_a_screenshot_says_where_it_went_or_why_not(
    engine: FakeEngine, make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app(engine)
    said: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **_kw: said.append(message)  # type: ignore[method-assign]
        path = take_screenshot(app, tmp_path / "shots")
        assert path is not None and path.is_file() and path.suffix == ".svg"
        assert said[-1] == f"Screenshot saved to {path}"
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        assert take_screenshot(app, blocker / "shots") is None
        assert said[-1].startswith("Screenshot not saved: ") and str(blocker) in said[-1]
        await pilot.pause()


# -- layout at the sizes terminals have ----------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (300, 80)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_header_never_wraps_and_the_footer_always_has_help_and_quit(
    engine: FakeEngine, make_app: MakeApp, size: tuple[int, int]
) -> None:
    app = make_app(engine)
    async with app.run_test(size=size) as pilot:

        def footer_drawn() -> bool:
            last = screen_text(app).splitlines()[-1]
            return "? Help" in last and "q Quit" in last

        await wait_until(pilot, footer_drawn)  # the footer is laid out after the table
        lines = screen_text(app).splitlines()
        # One line of counts, one for the hypervisor that is down, then the filter bar.
        assert lines[0].startswith(" qgadash") and "❄ 4 frozen · next thaw 0:47" in lines[0]
        assert lines[1].startswith(" ✖ hv3 host-key-rejected")
        assert lines[2].startswith(" filter:")
        assert "? Help" in lines[-1] and "q Quit" in lines[-1]
        # The table takes the whole width: its header line reaches the right edge.
        table = app.fleet.table
        used = sum(c.get_render_width(table) for c in table.columns.values())
        assert used == table.scrollable_content_region.width
        # The cursor row is on screen, under the column headers.
        assert table.cursor_vm is not None and table.cursor_vm in lines[4]
