"""Confirmations, the power menu, progress and outcomes of actions, quitting.

Every dialog that leads to a change on a guest opens with the focus on Cancel, lists the
VMs that will get the action and those skipped (with the reason, from `engine.plan`),
and offers only what the agents can do.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DataTable,
    Input,
    Label,
    ProgressBar,
    RadioButton,
    RadioSet,
    Static,
)

from qgadash.fleet.model import ActionResult
from qgadash.ui.engine_api import Action, ActionPlan, ActionProgress
from qgadash.ui.fleet_view import Palette
from qgadash.ui.plain import plain, sanitize

__all__ = [
    "ActionRunScreen",
    "ConfirmActionScreen",
    "FreezeChoice",
    "MessageScreen",
    "PowerChoice",
    "PowerScreen",
    "QuitScreen",
    "describe_result",
    "plan_text",
]

Runner = Callable[[ActionProgress], Awaitable[list[ActionResult]]]


def _vms(n: int) -> str:
    return f"{n} VM{'s' if n != 1 else ''}"


def plan_text(plan: ActionPlan, verb: str, palette: Palette, limit: int = 200) -> Text:
    """`Will freeze 3 VMs: a b c` and `Skipped 1: x (why)`, guest-safe."""
    text = Text()
    if plan.eligible:
        text.append(f"Will {verb} {_vms(len(plan.eligible))}:", style=Style(bold=True))
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


@dataclass(frozen=True, slots=True)
class FreezeChoice:
    """What the freeze confirmation returns: the thaw deadline in seconds (0: none)."""

    thaw_after: float | None


class ConfirmActionScreen(ModalScreen[FreezeChoice | None]):
    """Freeze or thaw: who gets it, who is skipped, [thaw deadline], Cancel first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal.cancel")
    ]

    def __init__(
        self,
        *,
        title: str,
        verb: str,
        plan: ActionPlan,
        how: str,
        palette: Palette,
        thaw_after: float | None = None,
    ) -> None:
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._verb = verb
        self._plan = plan
        self._how = how
        self._palette = palette
        self._thaw_after = thaw_after

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
            yield Static(id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(
                    f"{self._verb} {_vms(n)}",
                    id="confirm",
                    variant="error",
                    disabled=n == 0,
                )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#thaw-after")
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
        self.dismiss(FreezeChoice(thaw_after))


# -- power -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerOption:
    key: str
    label: str
    action: Action
    argument: str  # shutdown mode or suspend kind
    verb: str


POWER_OPTIONS: tuple[PowerOption, ...] = (
    PowerOption("powerdown", "Power down", Action.SHUTDOWN, "powerdown", "Power down"),
    PowerOption("reboot", "Reboot", Action.SHUTDOWN, "reboot", "Reboot"),
    PowerOption("halt", "Halt", Action.SHUTDOWN, "halt", "Halt"),
    PowerOption("ram", "Suspend to RAM", Action.SUSPEND_RAM, "ram", "Suspend"),
    PowerOption("disk", "Suspend to disk (hibernate)", Action.SUSPEND_DISK, "disk", "Hibernate"),
    PowerOption("hybrid", "Hybrid suspend", Action.SUSPEND_HYBRID, "hybrid", "Suspend (hybrid)"),
)


@dataclass(frozen=True, slots=True)
class PowerChoice:
    option: PowerOption
    plan: ActionPlan


def _common_reason(plan: ActionPlan) -> str:
    reasons: dict[str, int] = {}
    for _, why in plan.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return "no VM selected"
    return max(reasons, key=lambda r: reasons[r])


class PowerScreen(ModalScreen[PowerChoice | None]):
    """Shutdown (powerdown / reboot / halt) and suspend (ram / disk / hybrid)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal.cancel"),
        *(
            Binding(str(i + 1), f"pick({i})", opt.label, show=False, id=f"power.{opt.key}")
            for i, opt in enumerate(POWER_OPTIONS)
        ),
    ]

    def __init__(self, *, plans: dict[str, ActionPlan], how: str, palette: Palette) -> None:
        super().__init__(classes="confirm-dialog")
        self._plans = plans
        self._how = how
        self._palette = palette
        enabled = [o for o in POWER_OPTIONS if plans[o.key].eligible]
        self._selected: PowerOption | None = enabled[0] if enabled else None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text("Power", style="bold"), classes="dialog-title")
            yield Static(Text(f"Applies to {self._how}."), classes="dialog-how")
            with RadioSet(id="power-options"):
                for i, opt in enumerate(POWER_OPTIONS):
                    plan = self._plans[opt.key]
                    label = Text(f"{i + 1}  {opt.label}")
                    if not plan.eligible:
                        label.append("  — ", style=self._palette.stale)
                        label.append_text(
                            plain(_common_reason(plan), 70, style=self._palette.stale)
                        )
                    yield RadioButton(
                        label,
                        value=opt is self._selected,
                        disabled=not plan.eligible,
                        id=f"power-{opt.key}",
                    )
            with VerticalScroll(classes="dialog-list"):
                yield Static(id="power-plan")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("—", id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self._show_selected()
        self.query_one("#cancel", Button).focus()

    def _show_selected(self) -> None:
        button = self.query_one("#confirm", Button)
        plan_view = self.query_one("#power-plan", Static)
        opt = self._selected
        if opt is None:
            button.label = "Nothing possible"
            button.disabled = True
            plan_view.update(Text("None of these power actions is possible for these VMs now."))
            return
        plan = self._plans[opt.key]
        button.label = f"{opt.verb} {_vms(len(plan.eligible))}"
        button.disabled = not plan.eligible
        plan_view.update(plan_text(plan, opt.verb.lower(), self._palette))

    @on(RadioSet.Changed, "#power-options")
    def _option_changed(self, event: RadioSet.Changed) -> None:
        key = (event.pressed.id or "").removeprefix("power-")
        self._selected = next((o for o in POWER_OPTIONS if o.key == key), None)
        self._show_selected()

    def action_pick(self, index: int) -> None:
        opt = POWER_OPTIONS[index]
        if not self._plans[opt.key].eligible:
            return
        self.query_one(f"#power-{opt.key}", RadioButton).value = True

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        if self._selected is not None and self._plans[self._selected.key].eligible:
            self.dismiss(PowerChoice(self._selected, self._plans[self._selected.key]))


# -- running an action ----------------------------------------------------------------------


def describe_result(result: ActionResult, done: str) -> tuple[str, str]:
    """(outcome word, detail) for one VM's result."""
    if result.ok is True:
        value = result.value
        if isinstance(value, int) and not isinstance(value, bool):
            detail = f"{value} filesystem{'s' if value != 1 else ''}"
        elif value is None:
            detail = ""
        elif isinstance(value, str):
            detail = value
        else:
            detail = str(value)
        return done, detail
    if result.ok is None:
        return "unknown", result.error or ""
    return "failed", result.error or ""


class ActionRunScreen(ModalScreen[None]):
    """Progress while an action runs, then the outcome per VM. The work runs as an app
    worker, so closing this dialog early does not cancel it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="modal.close")]

    def __init__(
        self,
        *,
        title: str,
        done_word: str,
        plan: ActionPlan,
        runner: Runner,
        palette: Palette,
        on_finished: Callable[[list[ActionResult]], None] | None = None,
    ) -> None:
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._done_word = done_word
        self._plan = plan
        self._runner = runner
        self._palette = palette
        self._on_finished = on_finished
        self.results: list[ActionResult] = []
        self.finished = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self._title, style="bold"), classes="dialog-title")
            yield ProgressBar(total=len(self._plan.eligible) or 1, show_eta=False, id="progress")
            yield Static(id="run-summary")
            table: DataTable[Text] = DataTable(id="results", cursor_type="row")
            yield table
            if self._plan.skipped:
                yield Static(_skipped_text(self._plan, self._palette), classes="dialog-skipped")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Hide (keeps running)", id="close")

    def on_mount(self) -> None:
        table = self.query_one("#results", DataTable)
        table.add_column("VM", key="vm", width=30)
        table.add_column("OUTCOME", key="outcome", width=9)
        table.add_column("DETAIL", key="detail", width=60)
        table.add_column("TIME", key="time", width=8)
        self._summary()
        self.app.run_worker(self._run(), group="actions", exit_on_error=False)
        self.query_one("#close", Button).focus()

    async def _run(self) -> None:
        try:
            results = await self._runner(self._progress)
        except Exception as exc:
            self.finished = True
            if self.is_attached:
                self.query_one("#run-summary", Static).update(
                    Text(
                        f"{self._title} failed: {sanitize(str(exc), 300)}",
                        style=self._palette.error,
                    )
                )
                self.query_one("#close", Button).label = "Close"
            self.app.notify(
                f"{self._title} failed: {sanitize(str(exc), 200)}", severity="error", markup=False
            )
            return
        seen = {r.vm_id for r in self.results}
        for result in results:
            if result.vm_id not in seen:
                self._progress(result)
        self.results = list(results)
        self.finished = True
        if self._on_finished is not None:
            self._on_finished(self.results)
        if self.is_attached:
            self._summary()
            button = self.query_one("#close", Button)
            button.label = "Close"
            button.focus()

    def _progress(self, result: ActionResult) -> None:
        """Called by the engine per VM: drawing trouble must never break the action."""
        if any(r.vm_id == result.vm_id for r in self.results):
            return
        self.results.append(result)
        if not self.is_attached:
            return
        with contextlib.suppress(NoMatches):
            self._show_result(result)

    def _show_result(self, result: ActionResult) -> None:
        self.query_one("#progress", ProgressBar).advance(1)
        outcome, detail = describe_result(result, self._done_word)
        style = (
            self._palette.ok
            if result.ok
            else self._palette.warning
            if result.ok is None
            else self._palette.error
        )
        self.query_one("#results", DataTable).add_row(
            plain(result.vm_id, 30),
            Text(outcome, style=style),
            plain(detail, 200),
            Text(f"{result.elapsed_ms:.0f} ms", justify="right"),
            key=result.vm_id,
        )
        self._summary()

    def _summary(self) -> None:
        ok = sum(1 for r in self.results if r.ok)
        failed = sum(1 for r in self.results if r.ok is False)
        unknown = sum(1 for r in self.results if r.ok is None)
        total = len(self._plan.eligible)
        text = Text()
        state = "done" if self.finished else "running"
        text.append(f"{state}: {len(self.results)}/{total}  ")
        text.append(f"{ok} {self._done_word}", style=self._palette.ok)
        if failed:
            text.append(f"  {failed} failed", style=self._palette.error)
        if unknown:
            text.append(f"  {unknown} unknown", style=self._palette.warning)
        self.query_one("#run-summary", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


def _skipped_text(plan: ActionPlan, palette: Palette) -> Text:
    text = Text(f"Skipped {len(plan.skipped)}: ", style=palette.warning)
    for i, (vm_id, why) in enumerate(plan.skipped[:50]):
        if i:
            text.append(", ")
        text.append_text(plain(vm_id, 60))
        text.append(" (")
        text.append_text(plain(why, 80))
        text.append(")")
    return text


# -- quitting -------------------------------------------------------------------------------


class YesNoScreen(ModalScreen[bool]):
    """A question whose safe answer (#cancel, False) has the focus; #confirm says True."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal.cancel")
    ]

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class QuitScreen(YesNoScreen):
    """Quitting with guests this process froze: they are thawed first."""

    def __init__(self, frozen: Sequence[str], palette: Palette) -> None:
        super().__init__(classes="confirm-dialog")
        self._frozen = list(frozen)
        self._palette = palette

    def compose(self) -> ComposeResult:
        text = Text()
        text.append(
            f"This session froze {_vms(len(self._frozen))}; quitting thaws them first:",
            style=Style(bold=True),
        )
        for vm_id in self._frozen[:100]:
            text.append("\n  ❄ ", style=self._palette.frozen)
            text.append_text(plain(vm_id, 80))
        with Vertical(classes="dialog"):
            yield Static(Text("Quit", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-list"):
                yield Static(text)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(
                    f"Thaw {_vms(len(self._frozen))} and quit", id="confirm", variant="warning"
                )


class MessageScreen(YesNoScreen):
    """A message with two answers; the first (safe) one has the focus."""

    def __init__(self, title: str, body: Text, *, safe: str, risky: str | None = None) -> None:
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._body = body
        self._safe = safe
        self._risky = risky

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self._title, style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-list"):
                yield Static(self._body)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._safe, id="cancel")
                if self._risky:
                    yield Button(self._risky, id="confirm", variant="error")
