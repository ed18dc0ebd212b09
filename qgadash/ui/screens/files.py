"""Guest files (b): a listing where guest-exec allows it, open-by-path otherwise; a viewer
with chunked reads, a size cap, binary detection and follow mode; download and upload
with progress and cancel. Every agent call runs in a worker."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Log, ProgressBar, Static
from textual.worker import Worker

from qgadash.fleet.model import FreezeState
from qgadash.ui import bindings
from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.engine_api import DirEntry, DirListing, ListingUnavailable
from qgadash.ui.file_view import (
    LineBuffer,
    free_local_path,
    hex_lines,
    is_binary,
    join_path,
    local_name,
    parent_path,
)
from qgadash.ui.formatting import format_bytes
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.modals import MessageScreen

__all__ = ["FilesScreen", "PromptScreen", "TransferBar"]

VIEW_CHUNK = 256 * 1024
VIEW_CAP = 1024 * 1024  # shown before asking for more
FOLLOW_BYTES = 64 * 1024
FOLLOW_INTERVAL = 1.0
MAX_VIEW_LINES = 20_000


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


class TransferBar(Horizontal):
    """Shown while a download or upload runs."""

    def compose(self) -> ComposeResult:
        yield Static(id="transfer-label")
        yield ProgressBar(id="transfer-progress", show_eta=False)


class FilesScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(bindings.FILES)

    def __init__(
        self,
        vm_id: str,
        start: str | None = None,
        *,
        back_to_tab: Callable[[str], None] | None = None,
    ) -> None:
        """`back_to_tab`: opened from the details (tab 4); digits go back to its tabs."""
        super().__init__(classes="vm-screen")
        self.vm_id = vm_id
        self._back_to_tab = back_to_tab
        self._viewed_in: str | None = None  # the folder shown when `viewing` was opened
        self.cwd = start or "/"
        self.listing: DirListing | None = None
        self.viewing: str | None = None
        self.view_offset = 0
        self.view_size: int | None = None
        self.view_eof = True
        self.following = False
        self._view_worker: Worker[None] | None = None
        self._transfer: Worker[None] | None = None
        self._lines = LineBuffer()

    @property
    def qapp(self) -> Dashboard:
        return dashboard_of(self.app)

    @property
    def windows(self) -> bool:
        snap = self.qapp.engine.store.get(self.vm_id)
        return bool(snap and snap.facts.os and snap.facts.os.id == "mswindows")

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

    def _selected_entry(self) -> DirEntry | str | None:
        """The entry under the cursor, `".."`, or None."""
        table = self.query_one("#files-list", DataTable)
        if not table.display or self.listing is None or table.row_count == 0:
            return None
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        key = row_key.value or ""
        if key == "..":
            return ".."
        name = key.removeprefix("e:")
        return next((e for e in self.listing.entries if e.name == name), None)

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

    # -- viewing --------------------------------------------------------------------------

    def _viewer_title(self, note: str = "") -> None:
        palette = self.qapp.palette
        text = Text(" ─ ", no_wrap=True, overflow="ellipsis")
        if self.viewing is None:
            text.append("nothing open: enter on a file shows it here", style=palette.stale)
        else:
            text.append_text(plain(self.viewing, 100, style=Style(bold=True)))
            if self.view_size is not None:
                text.append(f"  {format_bytes(self.view_size)}", style=palette.stale)
            if self.following:
                text.append("  following", style=palette.ok + Style(bold=True))
        if note:
            text.append("  ")
            text.append(note, style=palette.stale)
        self.query_one("#viewer-title", Static).update(text)

    def view(self, path: str) -> None:
        self.following = False
        self.viewing = path
        self._viewed_in = self.cwd
        self.view_offset = 0
        self.view_size = None
        self.view_eof = False
        self._lines = LineBuffer()
        self.query_one("#viewer", Log).clear()
        self._viewer_title("reading…")
        self._view_worker = self.run_worker(
            self._read(path, VIEW_CAP), group="view", exclusive=True, exit_on_error=False
        )

    async def _read(self, path: str, budget: int) -> None:
        log = self.query_one("#viewer", Log)
        files = self.qapp.engine.files
        first = self.view_offset == 0
        try:
            while budget > 0:
                piece = await files.read(
                    self.vm_id, path, offset=self.view_offset, max_bytes=min(VIEW_CHUNK, budget)
                )
                self.view_size = piece.size
                if first and is_binary(piece.data):
                    log.write_lines(
                        [
                            f"binary file ({format_bytes(piece.size)}); the first bytes:",
                            *hex_lines(piece.data),
                        ]
                    )
                    self.view_eof = True
                    self._viewer_title("binary: d downloads it")
                    return
                first = False
                lines = self._lines.feed(piece.data)
                self.view_offset += len(piece.data)
                budget -= len(piece.data)
                if piece.eof or not piece.data:
                    lines += self._lines.flush()
                    self.view_eof = True
                if lines:
                    log.write_lines(lines)
                if self.view_eof:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.view_eof = True
            self._viewer_title("")
            log.write_line(sanitize(f"cannot read {path}: {exc}", 300))
            return
        if self.view_eof:
            self._viewer_title("")
        else:
            shown = format_bytes(self.view_offset)
            total = format_bytes(self.view_size) if self.view_size is not None else "?"
            self._viewer_title(f"first {shown} of {total}: m reads more, f follows the end")
        self.refresh_bindings()

    def action_more(self) -> None:
        if self.viewing and not self.view_eof:
            self._view_worker = self.run_worker(
                self._read(self.viewing, VIEW_CAP),
                group="view",
                exclusive=True,
                exit_on_error=False,
            )

    def action_follow(self) -> None:
        """tail -f of the file under the cursor; else of the open file, if it is in this
        folder (not one opened earlier somewhere else)."""
        if self.following:
            self.following = False
            if self._view_worker is not None:
                self._view_worker.cancel()
            self._viewer_title("stopped following")
            return
        entry = self._selected_entry()
        if isinstance(entry, DirEntry) and entry.kind != "dir":
            self.viewing = join_path(self.cwd, entry.name, windows=self.windows)
        elif self.viewing is None or self._viewed_in != self.cwd:
            self.notify("Put the cursor on a file: f follows its end.", markup=False)
            return
        self.following = True
        self._lines = LineBuffer()
        self.query_one("#viewer", Log).clear()
        self._viewer_title()
        self._view_worker = self.run_worker(
            self._follow(self.viewing), group="view", exclusive=True, exit_on_error=False
        )

    async def _follow(self, path: str) -> None:
        """tail -f: the last bytes, then whatever grows, once a second."""
        log = self.query_one("#viewer", Log)
        log.auto_scroll = True
        files = self.qapp.engine.files
        offset: int | None = None
        try:
            while self.following:
                try:
                    if offset is None:
                        piece = await files.tail(self.vm_id, path, max_bytes=FOLLOW_BYTES)
                        data = piece.data
                        if piece.offset > 0:  # drop the partial first line
                            cut = data.find(b"\n")
                            data = data[cut + 1 :] if cut >= 0 else b""
                        offset = piece.offset + len(piece.data)
                    else:
                        piece = await files.read(
                            self.vm_id, path, offset=offset, max_bytes=FOLLOW_BYTES
                        )
                        if piece.size is not None and piece.size < offset:
                            log.write_line("── file truncated; following from its new end ──")
                            offset = None
                            continue
                        data = piece.data
                        offset += len(data)
                    self.view_size = piece.size
                    lines = self._lines.feed(data)
                    if lines:
                        log.write_lines(lines)
                    self._viewer_title()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.write_line(sanitize(f"── read failed: {exc}; retrying ──", 300))
                await asyncio.sleep(FOLLOW_INTERVAL)
        finally:
            log.auto_scroll = False

    # -- transfers ------------------------------------------------------------------------

    def _transfer_running(self) -> bool:
        if self._transfer is not None and self._transfer.is_running:
            self.notify("A transfer is running; c cancels it.", markup=False)
            return True
        return False

    def action_download(self) -> None:
        if self._transfer_running():
            return
        entry = self._selected_entry()
        if isinstance(entry, DirEntry) and entry.kind != "dir":
            remote = join_path(self.cwd, entry.name, windows=self.windows)
        elif self.viewing:
            remote = self.viewing
        else:
            self.notify("Select a file (or open one by path) to download.", markup=False)
            return
        default = str(free_local_path(Path.cwd(), local_name(remote)))
        note = Text("From ")
        note.append_text(plain(f"{self.vm_id}:{remote}", 200))

        def chosen(values: dict[str, str] | None) -> None:
            if not values or not values["local"].strip():
                return
            local = Path(values["local"].strip()).expanduser()
            if local.is_dir():
                local = free_local_path(local, local_name(remote))
            if os.path.lexists(local):
                self._confirm_replace(remote, local)
            else:
                self._download(remote, local, overwrite=False)

        self.app.push_screen(
            PromptScreen(
                "Download", [("local", "Save as:", default)], confirm="Download", note=note
            ),
            chosen,
        )

    def _confirm_replace(self, remote: str, local: Path) -> None:
        body = Text(f"{local} exists. Replace it with ")
        body.append_text(plain(f"{self.vm_id}:{remote}", 200, style=Style(bold=True)))
        body.append("?")

        def answered(yes: bool | None) -> None:
            if yes:
                self._download(remote, local, overwrite=True)

        self.app.push_screen(
            MessageScreen("Replace a local file?", body, safe="Cancel", risky="Replace"), answered
        )

    def _download(self, remote: str, local: Path, *, overwrite: bool) -> None:
        self._start_transfer(
            f"download {remote}",
            lambda progress: self.qapp.engine.files.download(
                self.vm_id, remote, local, progress=progress, overwrite=overwrite
            ),
            done=f"downloaded to {local}",
        )

    def action_upload(self) -> None:
        if self.qapp.read_only or self._transfer_running():
            return

        def chosen(values: dict[str, str] | None) -> None:
            if not values:
                return
            local = Path(values["local"].strip()).expanduser()
            remote = values["remote"].strip()
            if not local.is_file():
                self.notify(f"{local} is not a readable file.", severity="error", markup=False)
                return
            if not remote or remote.endswith(("/", "\\")):
                remote = join_path(remote or self.cwd, local.name, windows=self.windows)
            self._confirm_upload(local, remote)

        self.app.push_screen(
            PromptScreen(
                "Upload",
                [
                    ("local", "Local file:", ""),
                    ("remote", "Guest path:", self.cwd.rstrip("/") + "/"),
                ],
                confirm="Next",
            ),
            chosen,
        )

    def _confirm_upload(self, local: Path, remote: str) -> None:
        note = Text("Writes ")
        note.append(f"{local} ({format_bytes(local.stat().st_size)})")
        note.append(" to ")
        note.append_text(plain(f"{self.vm_id}:{remote}", 200, style=Style(bold=True)))
        note.append(", replacing that file if it exists.")

        def confirmed(values: dict[str, str] | None) -> None:
            if values is None:
                return
            self._start_transfer(
                f"upload {local.name}",
                lambda progress: self.qapp.engine.files.upload(
                    self.vm_id, local, remote, progress=progress
                ),
                done=f"uploaded to {remote}",
                then=self.action_reload,  # the new file is in the listing
            )

        self.app.push_screen(
            PromptScreen(
                "Upload to the guest?",
                [],
                confirm="Upload",
                note=note,
                focus_cancel=True,
                risky=True,
            ),
            confirmed,
        )

    def _start_transfer(
        self, what: str, run: Any, *, done: str, then: Callable[[], None] | None = None
    ) -> None:
        bar = self.query_one("#transfer-progress", ProgressBar)
        label = self.query_one("#transfer-label", Static)
        self.query_one("#transfer").display = True
        bar.update(total=None, progress=0)
        label.update(plain(f"{what}…  (c cancels)", 120))
        vm_id = self.vm_id

        def progress(done_bytes: int, total: int | None) -> None:
            if self.is_attached and bar.is_attached:
                bar.update(total=total if total else None, progress=done_bytes)
                label.update(
                    plain(
                        f"{what}: {format_bytes(done_bytes)} of {format_bytes(total)}  (c cancels)",
                        120,
                    )
                )

        async def work() -> None:
            try:
                size = await run(progress)
            except asyncio.CancelledError:
                self.app.notify(sanitize(f"{vm_id}: {what} cancelled", 200), markup=False)
                raise
            except Exception as exc:
                self.app.notify(
                    sanitize(f"{vm_id}: {what} failed: {exc}", 300), severity="error", markup=False
                )
            else:
                self.app.notify(
                    sanitize(f"{vm_id}: {done} ({format_bytes(size)})", 300), markup=False
                )
                if then is not None and self.is_attached:
                    then()
            finally:
                if self.is_attached:
                    self.query_one("#transfer").display = False
                    self.refresh_bindings()

        self._transfer = self.app.run_worker(work(), group="transfer", exit_on_error=False)
        self.refresh_bindings()

    def action_cancel_transfer(self) -> None:
        if self._transfer is not None and self._transfer.is_running:
            self._transfer.cancel()

    def fleet_changed(self, changed: set[str], removed: set[str]) -> None:
        if self.vm_id in removed:
            self._viewer_title("the VM left the inventory")

    def tick(self) -> None:
        pass
