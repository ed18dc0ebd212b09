"""Yes/no questions (the safe answer focused) and the quit dialog, which follows the
holds while it is open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
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
    Static,
)

from qgadash.ui import bindings
from qgadash.ui.engine_api import Hold
from qgadash.ui.fleet_view import Palette
from qgadash.ui.formatting import format_countdown
from qgadash.ui.plain import plain
from qgadash.ui.screens.modals.confirm import count_vms
from qgadash.ui.vm_view import keeper_text

QUIT_REFRESH_SECONDS = 0.25  # the quit dialog re-reads the holds this often


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
        f"This session froze {count_vms(len(holds))}; quitting thaws them first:",
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
                f"Thaw {count_vms(len(holds))} and quit" if holds else "Quit"
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
