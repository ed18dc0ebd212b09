"""The freeze and thaw confirmation: who gets the action, who is skipped and why, the
deadline and where each thaw is kept; Cancel first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    Input,
    Label,
    Static,
)

from qgadash.ui import bindings
from qgadash.ui.engine_api import ActionPlan
from qgadash.ui.fleet_view import Palette
from qgadash.ui.plain import plain, sanitize

KeeperCheck = Callable[[], Awaitable[Mapping[str, str | None]]]


def count_vms(n: int) -> str:
    return f"{n} VM{'s' if n != 1 else ''}"


def plan_text(plan: ActionPlan, verb: str, palette: Palette, limit: int = 200) -> Text:
    """`Will freeze 3 VMs: a b c` and `Skipped 1: x (why)`, guest-safe."""
    text = Text()
    if plan.eligible:
        text.append(f"Will {verb} {count_vms(len(plan.eligible))}:", style=Style(bold=True))
        for vm_id in plan.eligible[:limit]:
            text.append("\n  ")
            text.append_text(plain(vm_id, 80))
        if len(plan.eligible) > limit:
            text.append(f"\n  … and {len(plan.eligible) - limit} more")
    else:
        text.append(f"No VM can {verb} now.", style=palette.warning + Style(bold=True))
    if plan.skipped:
        text.append(f"\nSkipped {len(plan.skipped)}:", style=palette.warning + Style(bold=True))
        for vm_id, why in plan.skipped[:limit]:
            text.append("\n  ")
            text.append_text(plain(vm_id, 80))
            text.append(" (", style=palette.stale)
            text.append_text(plain(why, 120, style=palette.stale))
            text.append(")", style=palette.stale)
        if len(plan.skipped) > limit:
            text.append(f"\n  … and {len(plan.skipped) - limit} more")
    return text


def vm_names(vm_ids: Sequence[str], limit: int = 6) -> Text:
    text = Text()
    for i, vm_id in enumerate(vm_ids[:limit]):
        if i:
            text.append("  ")
        text.append_text(plain(vm_id, 60))
    if len(vm_ids) > limit:
        text.append(f"  … and {len(vm_ids) - limit} more")
    return text


def keeper_plan_text(
    vm_ids: Sequence[str],
    answers: Mapping[str, str | None] | None,
    places: Mapping[str, str | None],
    thaw_after: float | None,
    palette: Palette,
) -> Text:
    """Before a freeze: which VMs get which thaw keeper (a thaw armed next to the guest
    that still happens if this qgadash dies), and every VM that can get none, and why.

    `answers`: `engine.keepers` (None while it is being asked); `places`: per VM, the
    hypervisor whose keeper would serve it, None for this machine's local keeper.
    """
    text = Text()
    if thaw_after == 0:
        text.append(
            "Thaw after 0 (never): no keeper is armed and nothing thaws these VMs at a "
            "deadline; they stay frozen until you thaw them or this qgadash quits.",
            style=palette.warning + Style(bold=True),
        )
        return text
    text.append("Thaw keepers ", style=Style(bold=True))
    text.append("(thaw at the deadline even if this qgadash dies):", style=palette.stale)
    if answers is None:
        text.append("\n  checking where a keeper can be armed…", style=palette.stale)
        return text
    groups: dict[str | None, list[str]] = {}
    refused: list[tuple[str, str]] = []
    for vm_id in vm_ids:
        why = answers.get(vm_id, "the engine did not say")
        if why is None:
            groups.setdefault(places.get(vm_id), []).append(vm_id)
        else:
            refused.append((vm_id, why))
    for place, members in sorted(groups.items(), key=lambda g: (g[0] is not None, g[0] or "")):
        text.append("\n  ")
        if place is None:
            text.append("local keeper (this machine)", style=palette.ok)
        else:
            text.append("keeper on hypervisor ", style=palette.ok)
            text.append_text(plain(place, 40, style=palette.ok))
        text.append(f" for {count_vms(len(members))}: ")
        text.append_text(vm_names(members))
    if refused:
        text.append(
            f"\n  No keeper for {count_vms(len(refused))}: only this qgadash will thaw "
            f"{'them' if len(refused) != 1 else 'it'}; if it dies, "
            f"{'they stay' if len(refused) != 1 else 'it stays'} frozen:",
            style=palette.error + Style(bold=True),
        )
        for vm_id, why in refused[:50]:
            text.append("\n    ")
            text.append_text(plain(vm_id, 60, style=palette.error))
            text.append(" (")
            text.append_text(plain(why, 160))
            text.append(")")
        if len(refused) > 50:
            text.append(f"\n    … and {len(refused) - 50} more", style=palette.error)
    return text


@dataclass(frozen=True, slots=True)
class FreezeChoice:
    """What the freeze confirmation returns: the thaw deadline in seconds (0: none), and
    the mount points to freeze (None: all of them)."""

    thaw_after: float | None
    mountpoints: tuple[str, ...] | None = None


def vss_note(clamped: Sequence[str], limit: float, palette: Palette) -> Text:
    """Which Windows guests are thawed sooner than asked: VSS holds writes at most
    `limit` seconds, so their deadline is `limit`."""
    text = Text()
    if clamped:
        text.append(
            f"Windows (VSS) holds a freeze at most {limit:g} s: thawed after {limit:g} s: ",
            style=palette.warning,
        )
        text.append_text(vm_names(clamped))
    return text


class ConfirmActionScreen(ModalScreen[FreezeChoice | None]):
    """Freeze or thaw: who gets it, who is skipped, [thaw deadline], Cancel first."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.MODAL_CANCEL)

    def __init__(
        self,
        *,
        title: str,
        verb: str,
        plan: ActionPlan,
        how: str,
        palette: Palette,
        thaw_after: float | None = None,
        keepers: KeeperCheck | None = None,
        keeper_places: Mapping[str, str | None] | None = None,
        mountpoints: bool = False,
        clamped: Callable[[float], tuple[Sequence[str], float]] | None = None,
        confirm_label: str | None = None,
    ) -> None:
        """`keepers` (a freeze): asks the engine which VMs can get a thaw keeper; the
        confirm button waits for the answer, so the dialog has said it before a freeze.
        `keeper_places`: per VM, the hypervisor whose keeper would serve it (None: the
        local keeper of this machine). `mountpoints`: a field to freeze only some.
        `clamped(thaw_after)`: the VMs whose deadline is shorter than asked (Windows'
        VSS limit), and that limit."""
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._verb = verb
        self._plan = plan
        self._how = how
        self._palette = palette
        self._thaw_after = thaw_after
        self._keepers = keepers
        self._keeper_places = dict(keeper_places or {})
        self._mountpoints = mountpoints
        self._clamped = clamped
        self._confirm_label = confirm_label
        self.keeper_answers: Mapping[str, str | None] | None = None

    def compose(self) -> ComposeResult:
        n = len(self._plan.eligible)
        with Vertical(classes="dialog"):
            yield Static(Text(self._title, style="bold"), classes="dialog-title")
            yield Static(Text(f"Applies to {self._how}."), classes="dialog-how")
            with VerticalScroll(classes="dialog-list"):
                yield Static(plan_text(self._plan, self._verb.lower(), self._palette))
            if self._thaw_after is not None:
                with Horizontal(classes="dialog-field"):
                    yield Label("Thaw automatically after:")
                    yield Input(
                        value=f"{self._thaw_after:g}",
                        type="number",
                        id="thaw-after",
                        classes="seconds",
                    )
                    yield Label("seconds (0: never)")
            if self._clamped is not None:
                yield Static(id="vss-note", classes="dialog-how")
            if self._mountpoints:
                with Horizontal(classes="dialog-field"):
                    yield Label("Mount points:", classes="field-label")
                    yield Input(placeholder="all (or some: / /data)", id="mountpoints")
            if self._keepers is not None and n:
                with VerticalScroll(classes="dialog-keepers"):
                    yield Static(id="keeper-plan")
            yield Static(id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(
                    self._confirm_label or f"{self._verb} {count_vms(n)}",
                    id="confirm",
                    variant="error",
                    disabled=n == 0 or self._keepers is not None,
                )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()
        self._show_clamped()
        if self._keepers is not None and self._plan.eligible:
            self._show_keepers()
            self.run_worker(self._ask_keepers(), group="keepers", exit_on_error=False)

    async def _ask_keepers(self) -> None:
        assert self._keepers is not None
        try:
            answers = dict(await self._keepers())
        except Exception as exc:  # the dialog must still let the operator decide
            why = f"could not ask: {sanitize(str(exc), 200)}"
            answers = {vm_id: why for vm_id in self._plan.eligible}
        self.keeper_answers = answers
        if self.is_attached:
            self._show_keepers()
            self.query_one("#confirm", Button).disabled = False

    def _entered_thaw_after(self) -> float | None:
        if self._thaw_after is None:
            return None
        try:
            return float(self.query_one("#thaw-after", Input).value.strip())
        except ValueError:
            return None

    def _show_keepers(self) -> None:
        with contextlib.suppress(NoMatches):
            self.query_one("#keeper-plan", Static).update(
                keeper_plan_text(
                    self._plan.eligible,
                    self.keeper_answers,
                    self._keeper_places,
                    self._entered_thaw_after(),
                    self._palette,
                )
            )

    def _show_clamped(self) -> None:
        if self._clamped is None:
            return
        after = self._entered_thaw_after()
        vms, limit = self._clamped(after if after is not None else 0.0)
        with contextlib.suppress(NoMatches):
            note = self.query_one("#vss-note", Static)
            note.update(vss_note(vms, limit, self._palette))
            note.display = bool(vms)

    @on(Input.Changed, "#thaw-after")
    def _deadline_changed(self) -> None:
        self._show_keepers()
        self._show_clamped()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#thaw-after, #mountpoints")
    def _deadline_entered(self) -> None:
        self.query_one("#confirm", Button).focus()

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        thaw_after = None
        if self._thaw_after is not None:
            raw = self.query_one("#thaw-after", Input).value.strip()
            try:
                thaw_after = float(raw)
            except ValueError:
                thaw_after = -1.0
            if not math.isfinite(thaw_after) or not 0 <= thaw_after <= 86400:
                self.query_one("#dialog-error", Static).update(
                    Text("Enter a number of seconds from 0 to 86400.", style=self._palette.error)
                )
                self.query_one("#thaw-after", Input).focus()
                return
        mountpoints = None
        if self._mountpoints:
            typed = tuple(self.query_one("#mountpoints", Input).value.split())
            mountpoints = typed or None
        self.dismiss(FreezeChoice(thaw_after, mountpoints))
