"""Confirmations, the power menu, progress and outcomes of actions, quitting.

Every dialog that leads to a change on a guest opens with the focus on Cancel, lists the
VMs that will get the action and those skipped (with the reason, from `engine.plan`),
and offers only what the agents can do.
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
from qgadash.ui import bindings
from qgadash.ui.engine_api import Action, ActionPlan, ActionProgress, Hold
from qgadash.ui.fleet_view import Palette
from qgadash.ui.formatting import format_bytes, format_countdown
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.vm_view import keeper_text

__all__ = [
    "ActionRunScreen",
    "ConfirmActionScreen",
    "FreezeChoice",
    "MessageScreen",
    "PowerChoice",
    "PowerScreen",
    "QuitScreen",
    "describe_result",
    "keeper_plan_text",
    "plan_text",
    "quit_text",
]

Runner = Callable[[ActionProgress], Awaitable[list[ActionResult]]]
KeeperCheck = Callable[[], Awaitable[Mapping[str, str | None]]]
QUIT_REFRESH_SECONDS = 0.25  # the quit dialog re-reads the holds this often


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


def _names(vm_ids: Sequence[str], limit: int = 6) -> Text:
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
        text.append(f" for {_vms(len(members))}: ")
        text.append_text(_names(members))
    if refused:
        text.append(
            f"\n  No keeper for {_vms(len(refused))}: only this qgadash will thaw "
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
        text.append_text(_names(clamped))
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
                    self._confirm_label or f"{self._verb} {_vms(n)}",
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
        elif exec_value(value) is not None:
            return exec_outcome(value)
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            detail = "; ".join(_trimmed(v) for v in value)  # fstrim, per path
        else:
            detail = str(value)
        return done, detail
    if result.ok is None:
        return "unknown", result.error or ""
    return "failed", result.error or ""


def exec_value(value: object) -> dict[str, object] | None:
    """A guest-exec result (exit code, signal, output), or None."""
    if isinstance(value, dict) and "exitcode" in value and "stdout" in value:
        return value
    return None


def exec_outcome(value: dict[str, object]) -> tuple[str, str]:
    """`exit 0`, `exit 2`, `signal 9`; the first line of output as the detail."""
    code, sig = value.get("exitcode"), value.get("signal")
    word = f"exit {code}" if code is not None else f"signal {sig}"
    out = str(value.get("stdout") or value.get("stderr") or "")
    first = out.strip().splitlines()[0] if out.strip() else ""
    return word, first


def _trimmed(path: dict[str, object]) -> str:
    where = str(path.get("path"))
    if path.get("error"):
        return f"{where}: {path['error']}"
    trimmed = path.get("trimmed")
    if isinstance(trimmed, int):
        return f"{where}: {format_bytes(trimmed)} trimmed"
    return where


def output_text(result: ActionResult, palette: Palette, limit: int = 400) -> Text:
    """Everything a VM's exec said: exit code, stdout, stderr (guest text made safe)."""
    text = Text()
    text.append_text(plain(result.vm_id, 80, style=Style(bold=True)))
    value = exec_value(result.value)
    if value is None:
        outcome, detail = describe_result(result, "done")
        text.append(f"  {outcome}", style=palette.ok if result.ok else palette.error)
        if detail:
            text.append("\n")
            text.append_text(plain(detail, 2000))
        return text
    word, _ = exec_outcome(value)
    failed = value.get("exitcode") != 0
    text.append(f"  {word}", style=palette.error if failed else palette.ok)
    for stream in ("stdout", "stderr"):
        body = str(value.get(stream) or "")
        truncated = bool(value.get(f"{stream}_truncated"))
        text.append(f"\n── {stream}", style=palette.stale)
        if truncated:
            text.append(" (cut by the agent)", style=palette.warning)
        if not body:
            text.append(": nothing", style=palette.stale)
            continue
        lines = body.rstrip("\n").split("\n")
        for line in lines[:limit]:
            text.append("\n")
            text.append_text(plain(line, 1000, style=palette.error if stream == "stderr" else ""))
        if len(lines) > limit:
            text.append(f"\n… {len(lines) - limit} more lines", style=palette.stale)
    return text


class ActionRunScreen(ModalScreen[None]):
    """Progress while an action runs, then the outcome per VM. The work runs as an app
    worker, so closing this dialog early does not cancel it."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.MODAL_CLOSE)

    def __init__(
        self,
        *,
        title: str,
        done_word: str,
        plan: ActionPlan,
        runner: Runner,
        palette: Palette,
        on_finished: Callable[[list[ActionResult]], None] | None = None,
        output: bool = False,
    ) -> None:
        """`output`: a pane under the results with everything the highlighted VM's
        command printed (exec)."""
        super().__init__(classes="confirm-dialog")
        self._output = output
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
            if self._output:
                with VerticalScroll(id="output-pane"):
                    yield Static(id="output")
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
        value = exec_value(result.value)
        if value is not None and value.get("exitcode") != 0:
            style = self._palette.error
        table = self.query_one("#results", DataTable)
        table.add_row(
            plain(result.vm_id, 30),
            Text(outcome, style=style),
            plain(detail, 200),
            Text(f"{result.elapsed_ms:.0f} ms", justify="right"),
            key=result.vm_id,
        )
        if self._output and table.row_count == 1:
            self._show_output(result.vm_id)
        self._summary()

    def _show_output(self, vm_id: str) -> None:
        result = next((r for r in self.results if r.vm_id == vm_id), None)
        if result is not None:
            self.query_one("#output", Static).update(output_text(result, self._palette))

    @on(DataTable.RowHighlighted, "#results")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self._output and event.row_key.value is not None:
            with contextlib.suppress(NoMatches):
                self._show_output(event.row_key.value)

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

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.MODAL_CANCEL)

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


def quit_text(holds: Sequence[Hold], now: float, palette: Palette, limit: int = 100) -> Text:
    """What quitting thaws: every hold of this session, timed or not, with its deadline
    and its keeper; or that nothing is left frozen."""
    text = Text()
    if not holds:
        text.append("Nothing this session froze is still frozen: there is nothing to thaw.")
        return text
    text.append(
        f"This session froze {_vms(len(holds))}; quitting thaws them first:",
        style=Style(bold=True),
    )
    ordered = sorted(holds, key=lambda h: (h.deadline is None, h.deadline or 0.0, h.vm_id))
    for hold in ordered[:limit]:
        text.append("\n  ")
        if hold.error:
            text.append("✖ ", style=palette.error)
            text.append_text(plain(hold.vm_id, 40, style=palette.error))
        else:
            text.append("❄ ", style=palette.frozen)
            text.append_text(plain(hold.vm_id, 40))
        text.append("  ")
        if hold.deadline is None:
            text.append("no automatic thaw", style=palette.warning)
        else:
            text.append(f"thaws in {format_countdown(hold.deadline - now)}", style=palette.frozen)
        text.append("  keeper: ", style=palette.stale)
        text.append_text(
            keeper_text(hold.keeper, hold.vm_id, palette, timed=hold.deadline is not None)
        )
        if hold.error:
            text.append("\n      ")
            text.append_text(plain(hold.error, 160, style=palette.error))
    if len(ordered) > limit:
        text.append(f"\n  … and {len(ordered) - limit} more")
    return text


class QuitScreen(YesNoScreen):
    """Quitting with guests this process froze: they are thawed first. The list is read
    again while the dialog is open (a deadline thaw takes its VM off), so what the
    operator confirms is what quitting does."""

    def __init__(
        self, holds: Callable[[], Sequence[Hold]], clock: Callable[[], float], palette: Palette
    ) -> None:
        super().__init__(classes="confirm-dialog")
        self._holds = holds
        self._clock = clock
        self._palette = palette
        self._shown: object = None
        self.held: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Quit", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-list"):
                yield Static(id="quit-holds")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Quit", id="confirm", variant="warning")

    def on_mount(self) -> None:
        super().on_mount()
        self.refresh_holds()
        self.set_interval(QUIT_REFRESH_SECONDS, self.refresh_holds)

    def refresh_holds(self) -> None:
        holds = list(self._holds())
        now = self._clock()
        key = (
            tuple((h.vm_id, h.deadline, h.keeper, h.error) for h in holds),
            [int(max(0.0, h.deadline - now) + 0.999) for h in holds if h.deadline is not None],
        )
        if key == self._shown:
            return
        self._shown = key
        self.held = [h.vm_id for h in holds]
        with contextlib.suppress(NoMatches):
            self.query_one("#quit-holds", Static).update(quit_text(holds, now, self._palette))
            self.query_one("#confirm", Button).label = (
                f"Thaw {_vms(len(holds))} and quit" if holds else "Quit"
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
