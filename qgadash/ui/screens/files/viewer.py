"""The files screen's viewer: chunked reads up to a cap, binary detection, follow mode."""

from __future__ import annotations

import asyncio

from rich.style import Style
from rich.text import Text
from textual.widgets import Log, Static

from qgadash.ui.engine_api import DirEntry
from qgadash.ui.file_view import (
    LineBuffer,
    hex_lines,
    is_binary,
    join_path,
)
from qgadash.ui.formatting import format_bytes
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.files.pane import FilesPane

VIEW_CHUNK = 256 * 1024
VIEW_CAP = 1024 * 1024  # shown before asking for more
FOLLOW_BYTES = 64 * 1024
FOLLOW_INTERVAL = 1.0
MAX_VIEW_LINES = 20_000


class FileViewing(FilesPane):

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
