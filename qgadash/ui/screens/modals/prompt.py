"""A few labelled fields and a confirm button (paths, command lines, passwords' users)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from qgadash.ui import bindings


class PromptScreen(ModalScreen[dict[str, str] | None]):
    """A few labelled fields and a confirm button; Cancel has the focus when the
    outcome changes a guest (`focus_cancel`)."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.MODAL_CANCEL)

    def __init__(
        self,
        title: str,
        fields: list[tuple[str, str, str]],  # (id, label, value)
        *,
        confirm: str,
        note: Text | None = None,
        focus_cancel: bool = False,
        risky: bool = False,
    ) -> None:
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._fields = fields
        self._confirm = confirm
        self._note = note
        self._focus_cancel = focus_cancel
        self._risky = risky

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self._title, style="bold"), classes="dialog-title")
            for field_id, label, value in self._fields:
                with Horizontal(classes="dialog-field"):
                    yield Label(label, classes="field-label")
                    yield Input(value=value, id=field_id)
            if self._note is not None:
                yield Static(self._note, classes="dialog-how")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(
                    self._confirm, id="confirm", variant="error" if self._risky else "primary"
                )

    def on_mount(self) -> None:
        if self._focus_cancel or not self._fields:
            self.query_one("#cancel", Button).focus()
        else:
            self.query_one(f"#{self._fields[0][0]}", Input).focus()

    def _values(self) -> dict[str, str]:
        return {fid: self.query_one(f"#{fid}", Input).value for fid, _, _ in self._fields}

    @on(Input.Submitted)
    def _submitted(self) -> None:
        if self._risky:
            self.query_one("#confirm", Button).focus()
        else:
            self.dismiss(self._values())

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#confirm")
    def _ok(self) -> None:
        self.dismiss(self._values())
