"""What screens, dialogs and verbs may read of the app that shows them, as a Protocol.

Screens never import the app (that was a circle: the app builds every screen). They
read its state through `Dashboard` and ask it for anything that changes what is on
screen by posting a Message (`ui/messages.py`), which bubbles from the screen up to the
app, the one place that pushes screens and starts guest actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from textual.app import App
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen

from qgadash.fleet.actions import ActionPlan
from qgadash.fleet.model import ActionResult
from qgadash.ui.engine_api import Engine
from qgadash.ui.fleet_view import Palette
from qgadash.ui.preferences import DisplaySettings

__all__ = ["Dashboard", "dashboard_of"]


class Dashboard(Protocol):
    """The app's state as screens see it (QgadashApp satisfies it structurally: a line in
    ui/app.py makes mypy check that)."""

    engine: Engine
    palette: Palette
    display_settings: DisplaySettings  # frame rate, colours, low-bandwidth (dashboard.json)
    optional_columns: frozenset[str]  # the fleet table's optional columns turned on
    keymap: dict[str, str]
    config_label: str
    clock: Callable[[], float]

    @property
    def read_only(self) -> bool: ...

    @property
    def settling_journal(self) -> bool: ...

    def key_for(self, binding_id: str, default: str) -> str: ...

    def show_column(self, key: str, shown: bool) -> None:
        """Turn an optional fleet column (CPU %, DISK I/O) and its polling on or off."""
        ...

    def refuse_read_only(self) -> bool:
        """True (and the operator told why) when actions are off."""
        ...

    def run_guest_action(
        self,
        title: str,
        done_word: str,
        plan: ActionPlan,
        runner: Callable[[Callable[[ActionResult], None]], object],
        *,
        output: bool = False,
    ) -> None: ...

    # The Textual App methods screens and verbs call (a Protocol cannot extend a class).
    def push_screen(self, screen: Any, callback: Any = None) -> Any: ...

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None: ...

    def run_worker(
        self,
        work: Any,
        name: str | None = "",
        group: str = "default",
        *,
        exit_on_error: bool = True,
    ) -> Any: ...

    def post_message(self, message: Message) -> bool: ...

    @property
    def screen_stack(self) -> list[Screen[Any]]: ...

    def save_screenshot(self, filename: str | None = None, path: str | None = None) -> str: ...


def dashboard_of(app: App[Any]) -> Dashboard:
    """The running app as a Dashboard (a cast: the app is always a QgadashApp)."""
    return cast(Dashboard, app)
