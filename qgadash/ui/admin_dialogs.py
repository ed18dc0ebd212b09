"""The password dialog of the dashboard's `password` verb: a user name and the password
twice, typed into masked fields. Its result is a `Secret` (repr `***`), so nothing that
prints or logs the dialog's outcome can show it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from qgadash.fleet.admin import Secret

__all__ = ["PasswordScreen"]


class PasswordScreen(ModalScreen[tuple[str, Secret] | None]):
    """User, password, again; Cancel first. Dismissed with (user, Secret) or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal.cancel")
    ]

    def __init__(self, title: str, user: str = "root") -> None:
        super().__init__(classes="confirm-dialog")
        self._title = title
        self._user = user

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(Text(self._title, style="bold"), classes="dialog-title")
            with Horizontal(classes="dialog-field"):
                yield Label("User:", classes="field-label")
                yield Input(value=self._user, id="user")
            with Horizontal(classes="dialog-field"):
                yield Label("Password:", classes="field-label")
                yield Input(password=True, id="password")
            with Horizontal(classes="dialog-field"):
                yield Label("Again:", classes="field-label")
                yield Input(password=True, id="again")
            yield Static(
                Text("Never shown, logged or written to the audit log."),
                id="password-note",
                classes="dialog-how",
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Next", id="confirm", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    def _note(self, message: str) -> None:
        self.query_one("#password-note", Static).update(Text(message, style="bold red"))

    @on(Button.Pressed, "#confirm")
    @on(Input.Submitted)
    def _ok(self) -> None:
        user = self._value("user").strip()
        password, again = self._value("password"), self._value("again")
        if not user:
            self._note("A user name is needed.")
        elif not password:
            self._note("An empty password is not set.")
        elif password != again:
            self._note("The two passwords differ.")
        else:
            self.dismiss((user, Secret(password)))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
