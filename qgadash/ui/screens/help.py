"""`?`: every binding, with the keys in force (after the user's keymap), and `:` jump."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from qgadash.ui.plain import plain

if TYPE_CHECKING:
    from qgadash.ui.app import QgadashApp

__all__ = ["HelpScreen", "JumpScreen", "binding_sections", "resolve_vm"]

# Binding ids that change guests; hidden from help in read-only mode.
ACTION_IDS = frozenset(
    {
        "freeze",
        "thaw",
        "power",
        "dismiss-thaw-error",
        "detail.freeze",
        "detail.thaw",
        "detail.power",
        "files.upload",
    }
)


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    return [b for b in items if isinstance(b, Binding)]


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Every screen's bindings, in the order the help shows them."""
    from qgadash.ui.app import QgadashApp
    from qgadash.ui.screens.detail import DetailScreen
    from qgadash.ui.screens.files import FilesScreen
    from qgadash.ui.screens.fleet import FleetScreen
    from qgadash.ui.widgets.fleet_table import FleetTable

    return [
        ("Fleet", _bindings([*FleetTable.BINDINGS, *FleetScreen.BINDINGS])),
        ("Details", _bindings(DetailScreen.BINDINGS)),
        ("Files", _bindings(FilesScreen.BINDINGS)),
        ("Everywhere", _bindings(QgadashApp.BINDINGS)),
    ]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
    ]

    @property
    def qapp(self) -> QgadashApp:
        return cast("QgadashApp", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide tall"):
            yield Static(Text("Keys", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-list"):
                yield Static(self._text(), id="help-body")

    def _keys(self, binding: Binding) -> str:
        keys = self.qapp.keymap.get(binding.id or "", binding.key)
        shown = []
        for key in keys.split(","):
            key = key.strip()
            if key:
                shown.append(
                    self.app.get_key_display(
                        dataclasses.replace(binding, key=key, key_display=None)
                    )
                )
        return " ".join(shown)

    def _text(self) -> Text:
        text = Text()
        palette = self.qapp.palette
        for title, bindings in binding_sections():
            if text:
                text.append("\n\n")
            text.append(f" {title}", style=Style(bold=True, underline=True))
            for binding in bindings:
                if self.qapp.read_only and binding.id in ACTION_IDS:
                    continue
                text.append("\n  ")
                text.append(f"{self._keys(binding):>12}", style=palette.accent + Style(bold=True))
                text.append(f"  {binding.description or binding.action}")
                if binding.id:
                    text.append(f"   [{binding.id}]", style=palette.stale)
        text.append("\n\n ctrl+p opens the command palette.", style=palette.stale)
        text.append(
            '\n Rebind in hosts.toml, [settings.keys]: binding id = "key,key" (ids in brackets).',
            style=palette.stale,
        )
        if self.qapp.read_only:
            text.append("\n READ-ONLY: actions are off.", style=palette.warning)
        return text

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)


def resolve_vm(query: str, ids: Sequence[str]) -> str | None:
    """Exact id, else the one id with that prefix / name / substring (case-insensitive)."""
    q = query.strip()
    if not q:
        return None
    if q in ids:
        return q
    low = q.lower()
    for test in (
        lambda i: i.lower() == low,
        lambda i: i.lower().rsplit("/", 1)[-1] == low,
        lambda i: i.lower().startswith(low),
        lambda i: low in i.lower(),
    ):
        hits = [i for i in ids if test(i)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            return None  # ambiguous
    return None


class JumpScreen(ModalScreen[str | None]):
    """`:` then a VM id (completion as you type)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="modal.cancel")
    ]

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(classes="jump-dialog")
        self._ids = sorted(ids)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Jump to VM", style="bold"), classes="dialog-title")
            yield Input(
                placeholder="hv1/web-01",
                id="jump-input",
                suggester=SuggestFromList(self._ids, case_sensitive=False),
            )
            yield Static(id="jump-error")

    @on(Input.Submitted, "#jump-input")
    def _go(self, event: Input.Submitted) -> None:
        vm_id = resolve_vm(event.value, self._ids)
        if vm_id is None:
            self.query_one("#jump-error", Static).update(
                Text.assemble("no single VM matches ", plain(event.value, 80))
            )
            return
        self.dismiss(vm_id)

    def action_cancel(self) -> None:
        self.dismiss(None)
