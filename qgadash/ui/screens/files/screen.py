"""Guest files (b): a listing where guest-exec allows it, open-by-path otherwise, with
the viewer and the transfers beside it. Every agent call runs in a worker."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Log, Static

from qgadash.fleet.model import FreezeState
from qgadash.ui import bindings
from qgadash.ui.engine_api import DirEntry, DirListing, ListingUnavailable
from qgadash.ui.file_view import (
    join_path,
    parent_path,
)
from qgadash.ui.formatting import format_bytes
from qgadash.ui.plain import plain
from qgadash.ui.screens.files.transfers import FileTransfers, TransferBar
from qgadash.ui.screens.files.viewer import MAX_VIEW_LINES, FileViewing


def listing_note(listing: DirListing, style: Style) -> Text:
    """What a listing leaves out: entries past its caps, records it could not read."""
    parts = []
    if listing.more:
        parts.append(f"{listing.more} entries not shown")
    elif listing.truncated:
        parts.append(f"only the first {len(listing.entries)} entries")
    if listing.skipped:
        parts.append(
            f"{listing.skipped} unreadable entr{'ies' if listing.skipped != 1 else 'y'} skipped"
        )
    return Text(" · ".join(parts), style=style)


class FilesScreen(FileViewing, FileTransfers):
    BINDINGS: ClassVar[list[BindingType]] = list(bindings.FILES)

    def compose(self) -> ComposeResult:
        yield Static(id="files-title")
        with Horizontal(id="files-body"):
            with Vertical(id="files-left"):
                yield Input(placeholder="open a path in the guest", id="files-path")
                yield Static(id="files-reason")
                table: DataTable[Text] = DataTable(id="files-list", cursor_type="row")
                yield table
            with Vertical(id="files-right"):
                yield Static(id="viewer-title")
                yield Log(id="viewer", max_lines=MAX_VIEW_LINES, auto_scroll=False)
        yield TransferBar(id="transfer")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#files-list", DataTable)
        table.add_column("NAME", key="name", width=28)
        table.add_column("SIZE", key="size", width=8)
        table.add_column("MODIFIED", key="mtime", width=16)
        self.query_one("#transfer").display = False
        if self.windows and self.cwd == "/":
            self.cwd = "C:\\"
        self._title()
        self._viewer_title()
        # Never the path field: keys typed right after opening (a `5` meant for the
        # details' tabs) must not become a path. `o` goes there.
        table.focus()
        blocked = self.files_blocked()
        reason = blocked or self.qapp.engine.files.can_list(self.vm_id)
        if reason is None:
            self.list_dir(self.cwd)
        else:
            self._no_listing(reason, can_open=blocked is None)

    def files_blocked(self) -> str | None:
        """Why no file of the guest can be opened at all now (a frozen guest disables
        guest-file-open), or None."""
        snap = self.qapp.engine.store.get(self.vm_id)
        info = snap.facts.info if snap else None
        if info is None or not info.offers("guest-file-open"):
            return None if info is None else "this agent has no guest-file-open"
        if info.enabled("guest-file-open"):
            return None
        if snap is not None and snap.freeze is FreezeState.FROZEN:
            return "the guest is frozen: its files cannot be opened until it is thawed"
        return "guest-file-open is disabled by the guest's policy"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "upload" and self.qapp.read_only:
            return False
        if action == "tab":
            return self._back_to_tab is not None
        if action == "open_path":
            return self.files_blocked() is None
        if action == "cancel_transfer":
            return self._transfer is not None and self._transfer.is_running
        if action == "more":
            return self.viewing is not None and not self.view_eof and not self.following
        return True

    # -- title and reasons ---------------------------------------------------------------

    def _title(self, via: str | None = None) -> None:
        text = Text(" ", no_wrap=True, overflow="ellipsis")
        text.append_text(plain(self.vm_id, 60, style=Style(bold=True)))
        text.append(":")
        text.append_text(plain(self.cwd, 120))
        if via:
            text.append(f"   (listed via {via})", style=self.qapp.palette.stale)
        self.query_one("#files-title", Static).update(text)

    def _reason(self, text: Text) -> None:
        reason = self.query_one("#files-reason", Static)
        reason.update(text)
        reason.display = bool(text.plain)

    def _no_listing(self, reason: str, *, can_open: bool = True) -> None:
        palette = self.qapp.palette
        text = Text("No listing: ", style=palette.warning)
        text.append_text(plain(reason, 200))
        if can_open:
            key = self.qapp.key_for("files.open-path", "o")
            text.append(f"\n{key}: open a file by its path.", style=palette.stale)
        self._reason(text)
        self.query_one("#files-list", DataTable).display = False
        self.query_one("#files-path", Input).display = can_open

    # -- listing --------------------------------------------------------------------------

    def list_dir(self, path: str) -> None:
        self._reason(Text("listing…", style=self.qapp.palette.stale))
        self.run_worker(self._list(path), group="list", exclusive=True, exit_on_error=False)

    async def _list(self, path: str) -> None:
        try:
            listing = await self.qapp.engine.files.list_dir(self.vm_id, path)
        except ListingUnavailable as exc:
            self._no_listing(str(exc))
            return
        except Exception as exc:
            self._reason(plain(f"cannot list {path}: {exc}", 300, style=self.qapp.palette.error))
            return
        self.show_listing(listing)

    def show_listing(self, listing: DirListing) -> None:
        self.listing = listing
        self.cwd = listing.path
        self._title(listing.via)
        table = self.query_one("#files-list", DataTable)
        table.display = True
        table.clear()
        palette = self.qapp.palette
        table.add_row(Text("../", style=Style(bold=True)), Text(""), Text(""), key="..")
        for entry in listing.entries:
            table.add_row(*self._entry_cells(entry), key=f"e:{entry.name}")
        self._reason(listing_note(listing, palette.warning))
        self.query_one("#files-path", Input).value = listing.path

    def _entry_cells(self, entry: DirEntry) -> tuple[Text, Text, Text]:
        palette = self.qapp.palette
        name = plain(entry.name, 60, style=Style(bold=True) if entry.kind == "dir" else "")
        if entry.kind == "dir":
            name.append("/")
        elif entry.kind == "link":
            name.append("@", style=palette.accent)
        size = Text("dir" if entry.kind == "dir" else format_bytes(entry.size), justify="right")
        mtime = Text(
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.mtime)) if entry.mtime else "—",
            style=palette.stale,
        )
        return name, size, mtime

    @on(DataTable.RowSelected, "#files-list")
    def _row_selected(self, _: DataTable.RowSelected) -> None:
        entry = self._selected_entry()
        if entry == "..":
            self.action_up()
        elif isinstance(entry, DirEntry):
            path = join_path(self.cwd, entry.name, windows=self.windows)
            if entry.kind == "dir":
                self.list_dir(path)
            else:
                self.view(path)

    @on(Input.Submitted, "#files-path")
    def _path_entered(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            return
        if self.qapp.engine.files.can_list(self.vm_id) is None and (
            path.endswith(("/", "\\")) or self._is_known_dir(path)
        ):
            self.list_dir(path)
        else:
            self.view(path)

    def _is_known_dir(self, path: str) -> bool:
        if self.listing is None:
            return path in ("/", "C:\\")
        return (
            any(
                e.kind == "dir" and join_path(self.cwd, e.name, windows=self.windows) == path
                for e in self.listing.entries
            )
            or path == self.cwd
        )

    def action_up(self) -> None:
        if self.focused is self.query_one("#files-path", Input):
            return
        if self.qapp.engine.files.can_list(self.vm_id) is None:
            self.list_dir(parent_path(self.cwd, windows=self.windows))

    def action_open_path(self) -> None:
        self.query_one("#files-path", Input).focus()

    def action_reload(self) -> None:
        """The folder again (enter on a file reads it again)."""
        if self.qapp.engine.files.can_list(self.vm_id) is None:
            self.list_dir(self.cwd)

    def action_tab(self, tab: str) -> None:
        if self._back_to_tab is not None:
            back = self._back_to_tab
            self.app.pop_screen()
            back(tab)

    def action_back(self) -> None:
        if self.focused is self.query_one("#files-path", Input) and self.listing is not None:
            self.query_one("#files-list", DataTable).focus()
            return
        self.app.pop_screen()

    def fleet_changed(self, changed: set[str], removed: set[str]) -> None:
        if self.vm_id in removed:
            self._viewer_title("the VM left the inventory")

    def tick(self) -> None:
        pass
