"""The dashboard's pure parts: untrusted text, filter, sort, cells, formats, themes."""

from __future__ import annotations

import dataclasses
import filecmp
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from qgadash.fleet.model import AgentState, FreezeState
from qgadash.ui.file_view import LineBuffer, is_binary, join_path, local_name, parent_path
from qgadash.ui.fleet_view import (
    COLUMNS,
    FleetFilter,
    Palette,
    count_fleet,
    header_text,
    is_fault,
    render_cell,
    row_values,
    sort_ids,
)
from qgadash.ui.formatting import (
    format_age,
    format_bytes,
    format_countdown,
    format_latency,
    sparkline,
)
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.help import resolve_vm
from qgadash.ui.themes import (
    SHIPPED_THEME_DIR,
    ThemeError,
    load_theme_file,
    load_themes,
    palette_from_variables,
)
from qgadash.ui.vm_view import nic_rates, overview_text

from .fakes import NOW, hostile_snapshot, mixed_fleet

REPO = Path(__file__).resolve().parents[2]

# -- untrusted text -------------------------------------------------------------------------


def test_plain_never_reads_markup_and_shows_escapes() -> None:
    text = plain("[bold]x[/]\x1b[31mred\x07\x9b2J\u202eevil\u2066\x7f")
    assert isinstance(text, Text)
    assert text.plain == "[bold]x[/]␛[31mred␇�2J�evil�␡"
    assert not text.spans


def test_plain_truncates_and_marks_missing() -> None:
    assert plain("a" * 300, 10).plain == "a" * 9 + "…"
    assert plain(None).plain == "—"
    assert plain("tab\there").plain == "tab␉here"


@given(st.text())
def test_sanitized_text_has_no_control_or_format_characters(s: str) -> None:
    out = sanitize(s, 10_000)
    for ch in out:
        assert unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"), repr(ch)


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_sanitized_text_respects_the_length_limit(s: str, n: int) -> None:
    assert len(sanitize(s, n)) <= n


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_rendering_guest_text_emits_no_escape_sequences_of_its_own(s: str) -> None:
    console = Console(width=80, color_system=None, force_terminal=True, legacy_windows=False)
    with console.capture() as capture:
        console.print(plain(s, 500))
    assert "\x1b" not in capture.get()


# -- filter, faults, sort ------------------------------------------------------------------------


def fleet():  # type: ignore[no-untyped-def]
    return mixed_fleet(24)[0]


def shown(text: str) -> set[str]:
    f = FleetFilter.parse(text)
    return {s.id for s in fleet() if f.matches(s)}


def test_filter_terms() -> None:
    every = {s.id for s in fleet()}
    assert shown("") == every
    assert shown("DB") == {s.id for s in fleet() if "db" in s.id}
    assert shown("!db") == every - shown("db")
    assert shown("tag:lab") == {s.id for s in fleet() if "lab" in s.ref.tags}
    assert shown("tag:l*") == shown("tag:lab")
    assert shown("hv3/*") == {s.id for s in fleet() if s.id.startswith("hv3/")}
    assert shown("10.0.2.*") == {"hv3/web-05", "hv3/web-17"}
    assert shown("debian !hv1") == {
        s.id
        for s in fleet()
        if s.facts.os and not s.id.startswith("hv1") and s.facts.os.id == "debian"
    }
    assert not FleetFilter.parse("  ")


def test_faults_are_agents_not_answering_and_failed_thaws() -> None:
    faults = {s.id for s in fleet() if is_fault(s)}
    for s in fleet():
        expected = s.agent in (
            AgentState.TIMEOUT,
            AgentState.UNREACHABLE,
            AgentState.ERROR,
        ) or bool(s.thaw_error)
        assert (s.id in faults) == expected


def test_sort_puts_missing_values_last_both_ways() -> None:
    snaps = fleet()
    up = sort_ids(snaps, "rtt", False)
    down = sort_ids(snaps, "rtt", True)
    missing = [s.id for s in snaps if s.latency_ms is None]
    assert up[-len(missing) :] == sorted(missing) == down[-len(missing) :]
    by_id = {s.id: s for s in snaps}
    values = [by_id[v].latency_ms for v in up[: -len(missing)]]
    assert values == sorted(values)


def test_every_column_renders_every_snapshot() -> None:
    palette = Palette()
    for snap in [*fleet(), hostile_snapshot()]:
        values = row_values(snap, NOW, marked=True)
        assert len(values) == len(COLUMNS)
        for i, value in enumerate(values):
            cell = render_cell(i, value, palette)
            assert isinstance(cell, Text)
            assert cell.cell_len <= max(COLUMNS[i].max_width, 11)


def test_countdown_cell_follows_the_clock() -> None:
    snap = next(s for s in fleet() if s.thaw_deadline)
    fs = [c.key for c in COLUMNS].index("fs")
    assert render_cell(fs, row_values(snap, NOW, False)[fs], Palette()).plain == "❄ 0:47"
    assert render_cell(fs, row_values(snap, NOW + 46.5, False)[fs], Palette()).plain == "❄ 0:01"
    assert render_cell(fs, row_values(snap, NOW + 99, False)[fs], Palette()).plain == "❄ 0:00"


def test_header_says_what_is_wrong_in_words() -> None:
    snaps, hvs = mixed_fleet(24)
    counts = count_fleet(snaps, hvs)
    text = header_text(counts, label="hosts.toml", read_only=True, palette=Palette()).plain
    assert "24 VMs" in text and "● 16 ok" in text and "READ-ONLY" in text
    assert "hv3 host-key-rejected: ssh: host key changed" in text
    assert "✖ 2 thaw failed" in text


# -- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (format_age, None, "—"),
        (format_age, 59.9, "59s"),
        (format_age, 61, "1m"),
        (format_age, 7200, "2h"),
        (format_age, 200000, "2d"),
        (format_countdown, 47, "0:47"),
        (format_countdown, 46.2, "0:47"),
        (format_countdown, -3, "0:00"),
        (format_countdown, 3723, "1:02:03"),
        (format_latency, 0.44, "0.4ms"),
        (format_latency, 123.4, "123ms"),
        (format_latency, 2500, "2.5s"),
        (format_bytes, 999, "999 B"),
        (format_bytes, 412_000, "412 KB"),
        (format_bytes, 32_100_000_000, "32.1 GB"),
    ],
)
def test_formats(fn, value, expected) -> None:  # type: ignore[no-untyped-def]
    assert fn(value) == expected


def test_sparkline_and_rates() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([1, 2, 4, 8]) == "▂▃▅█"
    from qgadash.fleet.store import CounterSample

    rx, tx = nic_rates(
        [CounterSample(0, 0, 0), CounterSample(2, 2000, 100), CounterSample(3, 10, 200)]
    )
    assert rx == [1000.0] and tx == [50.0]  # the counter reset is skipped


def test_disabled_commands_say_why() -> None:
    snaps = fleet()
    win = next(s for s in snaps if s.facts.os and s.facts.os.id == "mswindows")
    text = overview_text(win, NOW, Palette()).plain
    assert "2 disabled (disabled by the guest's policy" in text and "guest-exec" in text
    frozen = dataclasses.replace(win, freeze=FreezeState.FROZEN)
    assert "the agent is in frozen state" in overview_text(frozen, NOW, Palette()).plain


# -- files ---------------------------------------------------------------------------------------


def test_binary_detection() -> None:
    assert not is_binary(b"")
    assert not is_binary("héllo wörld\n".encode() * 100)
    assert not is_binary(("é" * 5000).encode()[:8191])  # a character cut at the end
    assert is_binary(b"\x7fELF\x00\x00")
    assert is_binary(bytes(range(128, 256)) * 10)


def test_line_buffer_keeps_partial_lines() -> None:
    buf = LineBuffer()
    assert buf.feed(b"one\ntw") == ["one"]
    assert buf.feed(b"o\r\nthree\x1b[2J") == ["two"]
    assert buf.flush() == ["three␛[2J"]


def test_guest_paths() -> None:
    assert join_path("/var/log", "..") == "/var"
    assert join_path("/", "etc") == "/etc"
    assert parent_path("/") == "/"
    assert parent_path("/var/log") == "/var"
    assert join_path("C:\\Windows", "win.ini", windows=True) == "C:\\Windows\\win.ini"
    assert local_name("/var/log/messages") == "messages"
    assert local_name("/etc/..").startswith("guest-file-")
    assert "/" not in local_name("C:\\a\\b/evil\x1b")


def test_jump_resolves_unique_names() -> None:
    ids = ["hv1/web-1", "hv2/web-1", "hv1/db-1"]
    assert resolve_vm("hv1/web-1", ids) == "hv1/web-1"
    assert resolve_vm("db-1", ids) == "hv1/db-1"
    assert resolve_vm("web-1", ids) is None  # two of them
    assert resolve_vm("HV2", ids) == "hv2/web-1"
    assert resolve_vm("nothing", ids) is None


# -- themes --------------------------------------------------------------------------------------


def test_shipped_themes_load_with_our_variables() -> None:
    themes, errors = load_themes(Path("/nonexistent"))
    assert errors == []
    assert {"qgadash-dark", "qgadash-light", "qgadash-high-contrast"} <= set(themes)
    for theme in themes.values():
        assert {"frozen", "stale"} <= set(theme.variables)
        palette = palette_from_variables({**theme.variables, "success": theme.success or ""})
        assert palette.frozen.color is not None


def test_top_level_themes_folder_matches_the_packaged_one() -> None:
    shipped = sorted(p.name for p in SHIPPED_THEME_DIR.glob("*.toml"))
    top = sorted(p.name for p in (REPO / "themes").glob("*.toml"))
    assert shipped == top
    for name in shipped:
        assert filecmp.cmp(SHIPPED_THEME_DIR / name, REPO / "themes" / name, shallow=False)


def test_user_themes_override_and_bad_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('name = "qgadash-dark"\nprimary = "#ff0000"\n')
    (tmp_path / "broken.toml").write_text('name = "x"\nprimary = "not a colour"\n')
    (tmp_path / "typo.toml").write_text('name = "y"\nprimry = "#ff0000"\n')
    themes, errors = load_themes(tmp_path)
    assert themes["qgadash-dark"].primary == "#ff0000"
    assert themes["qgadash-dark"].variables["frozen"]  # defaults filled in
    assert len(errors) == 2
    assert any("broken.toml: primary" in e for e in errors)
    assert any("unknown key 'primry'" in e for e in errors)
    with pytest.raises(ThemeError):
        load_theme_file(tmp_path / "broken.toml")


@pytest.mark.parametrize("available", [60, 80, 100, 120, 126, 160, 200, 300, 400])
def test_columns_fill_the_width_and_drop_only_what_must_go(available: int) -> None:
    from qgadash.ui.fleet_view import DROP_ORDER, content_widths, fit_widths

    content = content_widths(fleet())
    widths = fit_widths(available, padding=1, content=content)
    shown = [c for c in COLUMNS if c.key in widths]
    assert list(widths) == [c.key for c in shown]  # in table order
    for col in shown:
        wanted = content.get(col.key, col.wanted)
        if col.grow:
            assert widths[col.key] >= col.min_width
        else:
            assert widths[col.key] == wanted  # as wide as what it holds, no wider
    total = sum(widths.values()) + 2 * len(shown)
    essentials = {"mark", "vm", "agent", "ip", "fs", "full", "seen"}
    assert essentials <= set(widths)
    least = sum(
        c.min_width if c.grow else content.get(c.key, c.wanted)
        for c in COLUMNS
        if c.key in essentials
    ) + 2 * len(essentials)
    if least <= available:
        assert total == available  # the whole width, never a blank strip on the right
    assert set(DROP_ORDER) >= {c.key for c in COLUMNS if c.key not in widths}
    # The OS is cut to less than it needs only when nothing that could go is left.
    os_cut = "os" in widths and widths["os"] < min(content["os"], 16)
    if os_cut:
        assert not {"hv", "load", "host", "rtt"} & set(widths)


def test_the_agent_tab_names_an_old_agents_generation_and_what_it_cannot_report() -> None:
    from qgadash.agent.replies import parse_info
    from qgadash.fleet.model import GuestFacts, VmRef, VmSnapshot
    from qgadash.ui.fleet_view import Palette
    from qgadash.ui.vm_view import agent_text

    old = parse_info(
        {
            "version": "2.5.0",
            "supported_commands": [
                {"name": n, "enabled": True, "success-response": True}
                for n in ("guest-ping", "guest-info", "guest-fsfreeze-freeze")
            ],
        }
    )
    snap = VmSnapshot(VmRef("hv", "legacy", "/x"), AgentState.OK, facts=GuestFacts(info=old))
    shown = agent_text(snap, Palette()).plain
    assert f"generation: {old.era}" in shown and "2.5" in old.era
    assert "It cannot report: " in shown
    assert "OS" in old.cannot_report and all(f in shown for f in old.cannot_report)


@pytest.mark.parametrize(
    ("age", "step"),
    [(0, 0), (4.9, 0), (9.99, 0), (10, 10), (19, 10), (59, 50), (60, 60), (119, 60),
     (3599, 3540), (3600, 3600), (7199, 3600), (86400, 86400), (200000, 172800), (-3, 0)],
)  # fmt: skip
def test_seen_moves_at_a_coarse_step(age: float, step: int) -> None:
    """A VM polled every 5 s stays one SEEN value: its cell is not rewritten every second."""
    from qgadash.ui.fleet_view import seen_step

    assert seen_step(age) == step


def test_the_placeholder_row_renders_in_every_column() -> None:
    """A VM removed from the store just before its row is drawn: a grey row, no crash."""
    from qgadash.ui.fleet_view import COLUMNS, Palette, placeholder_values, render_cell

    values = placeholder_values("hv1/gone")
    assert len(values) == len(COLUMNS)
    cells = [render_cell(i, v, Palette()).plain for i, v in enumerate(values)]
    assert cells[1] == "hv1/gone"


# -- the details' Admin tab ---------------------------------------------------------------------


def test_admin_tab_shows_hostile_key_text_as_plain_text() -> None:
    from qgadash.agent.replies import Vcpu
    from qgadash.fleet.admin_view import AdminView, UserKeys
    from qgadash.ui.vm_view import admin_text

    evil = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== [bold]x\x1b[2J\u202eevil"
    view = AdminView(
        (Vcpu(0, True, False), Vcpu(1, False, True)),
        None,
        (
            UserKeys("r\x1b]0;owned\x07oot", (evil, "\x1b[31m not a key")),
            UserKeys("bob", error="bad\x1b[2J news"),
        ),
        None,
    )
    console = Console(width=200, color_system=None, force_terminal=True, legacy_windows=False)
    with console.capture() as capture:
        console.print(admin_text(view, Palette()))
    out = capture.get()
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "[bold]x" in out  # never read as markup
    assert "1 of 2 online" in out and "offline    1" in out


def test_vcpu_ids_as_ranges() -> None:
    from qgadash.ui.vm_view import id_ranges

    assert id_ranges([]) == ""
    assert id_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert id_ranges(list(range(64))) == "0-63"
