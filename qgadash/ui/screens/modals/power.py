"""The power menu: shutdown, reboot, halt, suspend, only what the agents can do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    RadioButton,
    RadioSet,
    Static,
)

from qgadash.ui import bindings
from qgadash.ui.engine_api import Action, ActionPlan
from qgadash.ui.fleet_view import Palette
from qgadash.ui.plain import plain
from qgadash.ui.screens.modals.confirm import count_vms, plan_text


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
        *bindings.MODAL_CANCEL,
        # 1-9 pick an option: made from POWER_OPTIONS, so they live beside them.
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
        button.label = f"{opt.verb} {count_vms(len(plan.eligible))}"
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
