"""What the dashboard says about freezes, as pure functions: the header's frozen count and
next thaw, the red row of a failed thaw, the quit list, the keeper plan, the details."""

from __future__ import annotations

import dataclasses

from rich.color import Color
from rich.console import Console
from rich.text import Text

from qgadash.fleet.guard import Hold
from qgadash.fleet.model import FreezeState
from qgadash.ui.fleet_view import (
    COLUMNS,
    Palette,
    count_fleet,
    header_text,
    hold_summary,
    render_cell,
    row_values,
)
from qgadash.ui.screens.modals import keeper_plan_text, quit_text
from qgadash.ui.vm_view import freeze_text

from .fakes import NOW, mixed_fleet

PALETTE = Palette()


def colours(text: Text) -> set[Color | None]:
    """The foreground colour of every visible character of `text`."""
    console = Console(width=200, color_system="truecolor")
    return {
        seg.style.color if seg.style else None for seg in text.render(console) if seg.text.strip()
    }


def held_fleet() -> tuple[list, list, set[str]]:  # type: ignore[type-arg]
    snaps, hvs = mixed_fleet(24)
    held = {s.id for s in snaps if s.thaw_deadline is not None or s.thaw_error is not None}
    return snaps, hvs, held


# -- the header --------------------------------------------------------------------------


def test_header_counts_this_sessions_holds_and_the_nearest_deadline() -> None:
    snaps, hvs, held = held_fleet()
    holds = [Hold("hv1/web-03", NOW + 47), Hold("hv1/web-15", NOW + 130), Hold("x/y", None)]
    summary = hold_summary(holds, NOW)
    assert summary.held == 3 and summary.next_thaw == 47
    text = header_text(
        count_fleet(snaps, hvs, held), label="", read_only=False, palette=PALETTE, holds=summary
    ).plain
    assert "❄ 3 frozen · next thaw 0:47" in text
    # Two VMs frozen by someone else are counted apart, never as ours.
    assert "❄ 2 frozen by others" in text
    # The countdown follows the clock.
    assert hold_summary(holds, NOW + 40.5).next_thaw == 7


def test_only_untimed_holds_show_no_next_thaw() -> None:
    summary = hold_summary([Hold("hv1/a", None), Hold("hv1/b", None)], NOW)
    assert summary.next_thaw is None
    snaps, hvs, held = held_fleet()
    text = header_text(
        count_fleet(snaps, hvs, held), label="", read_only=False, palette=PALETTE, holds=summary
    ).plain
    assert "❄ 2 frozen" in text and "next thaw" not in text


def test_an_overdue_deadline_shows_zero_not_a_negative_countdown() -> None:
    assert hold_summary([Hold("hv1/a", NOW - 30)], NOW).next_thaw == 0


def test_header_says_while_an_earlier_runs_journal_is_settled() -> None:
    snaps, hvs, held = held_fleet()
    counts = count_fleet(snaps, hvs, held)
    settling = hold_summary([], NOW, settling=True)
    assert (
        "settling holds of an earlier run"
        in header_text(counts, label="", read_only=False, palette=PALETTE, holds=settling).plain
    )
    assert (
        "settling"
        not in header_text(
            counts, label="", read_only=False, palette=PALETTE, holds=hold_summary([], NOW)
        ).plain
    )


def test_a_narrow_header_drops_calm_counts_but_keeps_frozen_and_next_thaw() -> None:
    snaps, hvs, held = held_fleet()
    counts = count_fleet(snaps, hvs, held)
    summary = hold_summary([Hold("hv1/web-03", NOW + 41)], NOW)
    for width in (200, 160, 120, 80, 60):
        text = header_text(
            counts,
            label="hosts.toml",
            read_only=True,
            palette=PALETTE,
            holds=summary,
            width=width,
        )
        first = text.plain.split("\n")[0]
        assert "❄ 1 frozen · next thaw 0:41" in first, (width, first)
        assert "thaw failed" in first and "READ-ONLY" in first
        assert len(first) <= max(width, 80), (width, first)
    wide = header_text(
        counts, label="hosts.toml", read_only=False, palette=PALETTE, holds=summary, width=300
    ).plain
    assert "hosts.toml" in wide and "● 16 ok" in wide and "24 VMs" in wide
    narrow = header_text(
        counts, label="hosts.toml", read_only=False, palette=PALETTE, holds=summary, width=100
    ).plain.split("\n")[0]
    assert "hosts.toml" not in narrow and "● 16 ok" not in narrow


# -- the failed thaw's row ------------------------------------------------------------------


def test_a_failed_thaw_turns_every_cell_of_its_row_red() -> None:
    snaps, _, _ = held_fleet()
    failed = next(s for s in snaps if s.thaw_error)
    error = PALETTE.error.color
    for i, value in enumerate(row_values(failed, NOW, marked=True)):
        cell = render_cell(i, value, PALETTE)
        assert colours(cell) <= {error}, (COLUMNS[i].key, colours(cell))
    # Thawed or dismissed (the error cleared): the row is its usual colours again.
    cleared = dataclasses.replace(failed, thaw_error=None)
    vm = [c.key for c in COLUMNS].index("vm")
    assert error not in colours(render_cell(vm, row_values(cleared, NOW, False)[vm], PALETTE))


# -- the quit dialog's list -------------------------------------------------------------------


def test_quit_list_names_every_hold_with_deadline_and_keeper() -> None:
    holds = [
        Hold("hv1/untimed", None),
        Hold("hv1/local", NOW + 41, keeper="local"),
        Hold("hv2/remote", NOW + 90, keeper="systemd"),
        Hold("hv2/failed", NOW - 5, keeper="nohup", error="thaw failed: no reply"),
    ]
    text = quit_text(holds, NOW, PALETTE).plain
    assert "This session froze 4 VMs; quitting thaws them first" in text
    lines = {line.split()[1]: line for line in text.splitlines()[1:] if line.strip()[:1] in "❄✖"}
    assert "no automatic thaw" in lines["hv1/untimed"]
    assert "thaws in 0:41" in lines["hv1/local"] and "local keeper" in lines["hv1/local"]
    assert "thaws in 1:30" in lines["hv2/remote"] and "systemd timer on hv2" in lines["hv2/remote"]
    assert "nohup keeper on hv2" in lines["hv2/failed"] and "thaw failed: no reply" in text
    # Soonest deadline first, untimed last.
    order = [line.split()[1] for line in text.splitlines()[1:] if line.strip()[:1] in "❄✖"]
    assert order == ["hv2/failed", "hv1/local", "hv2/remote", "hv1/untimed"]


def test_quit_list_says_when_nothing_is_left_frozen() -> None:
    text = quit_text([], NOW, PALETTE).plain
    assert "Nothing this session froze is still frozen" in text and "❄" not in text


def test_quit_list_shows_guest_names_literally() -> None:
    text = quit_text([Hold("hv1/[bold]x\x1b[31m", NOW + 5)], NOW, PALETTE).plain
    assert "[bold]x␛[31m" in text and "\x1b" not in text


# -- the freeze confirmation's keeper plan ------------------------------------------------------


def test_keeper_plan_says_which_vm_gets_which_keeper_and_which_none() -> None:
    vms = ["hv1/a", "hv1/b", "hv2/c", "hv3/d"]
    answers = {
        "hv1/a": None,
        "hv1/b": None,
        "hv2/c": None,
        "hv3/d": "hv3: no systemd-run, no nohup",
    }
    places = {"hv1/a": None, "hv1/b": None, "hv2/c": "hv2", "hv3/d": "hv3"}
    text = keeper_plan_text(vms, answers, places, 60, PALETTE)
    plain = text.plain
    assert "local keeper (this machine) for 2 VMs: hv1/a  hv1/b" in plain
    assert "keeper on hypervisor hv2 for 1 VM: hv2/c" in plain
    assert "No keeper for 1 VM: only this qgadash will thaw it" in plain
    assert "hv3/d (hv3: no systemd-run, no nohup)" in plain
    start = plain.index("hv3/d")
    assert PALETTE.error.color in colours(text[start : start + 5])


def test_keeper_plan_while_asking_and_with_thaw_after_0() -> None:
    assert (
        "checking where a keeper can be armed"
        in keeper_plan_text(["hv1/a"], None, {}, 60, PALETTE).plain
    )
    never = keeper_plan_text(["hv1/a"], {"hv1/a": None}, {"hv1/a": None}, 0, PALETTE).plain
    assert "Thaw after 0 (never): no keeper is armed" in never
    assert "local keeper" not in never


# -- details --------------------------------------------------------------------------------------


def test_details_say_which_keeper_a_hold_has() -> None:
    snaps, _, _ = held_fleet()
    frozen = next(s for s in snaps if s.thaw_deadline is not None)
    hold = Hold(frozen.id, NOW + 47, keeper="local")
    text = freeze_text(frozen, NOW, PALETTE, hold).plain
    assert "frozen by this session, thaws in 0:47" in text
    assert "keeper: local keeper (a process on this machine)" in text
    remote = freeze_text(frozen, NOW, PALETTE, Hold(frozen.id, NOW + 47, keeper="nohup")).plain
    assert f"keeper: nohup keeper on {frozen.ref.hypervisor}" in remote
    failed = Hold(frozen.id, NOW + 47, keeper="none: hv1: no systemd-run, no nohup")
    styled = freeze_text(frozen, NOW, PALETTE, failed)
    assert "keeper: no keeper (hv1: no systemd-run, no nohup)" in styled.plain
    start = styled.plain.index("no keeper")
    assert colours(styled[start : start + 9]) == {PALETTE.error.color}
    untimed = dataclasses.replace(frozen, thaw_deadline=None)
    text = freeze_text(untimed, NOW, PALETTE, Hold(frozen.id, None)).plain
    assert "no automatic thaw" in text and "keeper: no keeper" in text
    # Frozen without a hold of ours: someone else's.
    assert "not by this session" in freeze_text(untimed, NOW, PALETTE, None).plain
    unknown = dataclasses.replace(frozen, freeze=FreezeState.UNKNOWN)
    assert "outcome unknown" in freeze_text(unknown, NOW, PALETTE, hold).plain
