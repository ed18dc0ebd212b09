"""An action running on some VMs: its progress, each VM's outcome and output."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
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
    DataTable,
    ProgressBar,
    Static,
)

from qgadash.fleet.model import ActionResult
from qgadash.ui import bindings
from qgadash.ui.engine_api import ActionPlan, ActionProgress
from qgadash.ui.fleet_view import Palette
from qgadash.ui.formatting import format_bytes
from qgadash.ui.plain import plain, sanitize

Runner = Callable[[ActionProgress], Awaitable[list[ActionResult]]]


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
