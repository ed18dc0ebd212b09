"""`?`: every binding, with the keys in force (after the user's keymap), and `:` jump."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from qgadash.ui import bindings
from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.plain import plain

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
        "exec",
    }
)

# What the table's columns and the header's symbols mean (`?` shows it under the keys).
LEGEND: tuple[tuple[str, str], ...] = (
    (
        "AGENT",
        "ok; timeout (connected, no answer in time); unreachable (no connection); "
        "error (nonsense); … not polled yet; shut off by you / suspended / rebooting: "
        "a power action from this session (d removes the row)",
    ),
    (
        "FS",
        "thawed; ❄ 0:47 frozen, thawed by this session in 0:47; ❄ frozen: no "
        "automatic thaw; THAW FAILED: a thaw this session owes did not work (x dismisses); "
        "? unknown",
    ),
    ("FULL", "the fullest filesystem's use (amber from 85 %, red from 95 %)"),
    ("LOAD", "1-minute load average the guest reports"),
    (
        "CPU%",
        "optional (ctrl+p: Show the CPU% column): busy share of all vCPUs over the last poll "
        "interval (guest-get-cpustats, qemu-ga 7.1+; asked of every VM while shown)",
    ),
    (
        "DISK I/O",
        "optional (ctrl+p): bytes read and written a second, all disks, over the last poll "
        "interval (guest-get-diskstats, qemu-ga 7.1+; asked of every VM while shown)",
    ),
    ("RTT", "round trip of the last poll (amber from 500 ms)"),
    ("SEEN", "time since the agent last answered"),
    ("● ▲ ✖ !", "in the header: ok, timeout, unreachable, error counts"),
    ("■ ◐ ↻", "stopped, suspended, rebooting (by this session)"),
    ("❄", "frozen: by this session (with the next thaw), or by others"),
    ("✓", "a marked VM: actions apply to the marked VMs, else to the cursor's"),
    ("▲ ▼", "the column the table is sorted by, and which way"),
)


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    return [b for b in items if isinstance(b, Binding)]


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Every screen's bindings, in the order the help shows them."""
    return [(title, _bindings(items)) for title, items in bindings.SECTIONS]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(bindings.HELP)

    @property
    def qapp(self) -> Dashboard:
        return dashboard_of(self.app)

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
        for title, section in binding_sections():
            if text:
                text.append("\n\n")
            text.append(f" {title}", style=Style(bold=True, underline=True))
            sorts = [
                b for b in section if (b.id or "").startswith("sort-") and b.id != "sort-reverse"
            ]
            if sorts:
                text.append("\n  ")
                keys = " ".join(self._keys(b) for b in sorts)
                text.append(f"{keys:>12}", style=palette.accent + Style(bold=True))
                labels = ", ".join(
                    b.description.split(" (")[0].removeprefix("Sort by ") for b in sorts
                )
                text.append(f"  sort by {labels}; the same key again reverses")
            for binding in section:
                if self.qapp.read_only and binding.id in ACTION_IDS:
                    continue
                pinned = title != "Everywhere" and binding.id in bindings.PINNED_IDS
                if binding in sorts or pinned:
                    continue
                text.append("\n  ")
                text.append(f"{self._keys(binding):>12}", style=palette.accent + Style(bold=True))
                text.append(f"  {binding.description or binding.action}")
                if binding.id:
                    text.append(f"   [{binding.id}]", style=palette.stale)
        text.append("\n\n What you see", style=Style(bold=True, underline=True))
        for name, meaning in LEGEND:
            text.append("\n  ")
            text.append(f"{name:>12}", style=palette.accent + Style(bold=True))
            text.append(f"  {meaning}")
        text.append(
            "\n\n / filters on what the rows show (id, HV, state, OS, hostname, IPv4); "
            "ip:, os: and tag: reach the rest; !term inverts; * ? [ ] glob.",
            style=palette.stale,
        )
        text.append("\n ctrl+p opens the command palette.", style=palette.stale)
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

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.MODAL_CANCEL)

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
