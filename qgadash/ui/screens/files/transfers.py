"""The files screen's transfers: download and upload with progress and cancel, never
replacing a local file without asking."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from qgadash.ui.engine_api import DirEntry
from qgadash.ui.file_view import (
    free_local_path,
    join_path,
    local_name,
)
from qgadash.ui.formatting import format_bytes
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.files.pane import FilesPane
from qgadash.ui.screens.modals import MessageScreen
from qgadash.ui.screens.modals.prompt import PromptScreen


class TransferBar(Horizontal):
    """Shown while a download or upload runs."""

    def compose(self) -> ComposeResult:
        yield Static(id="transfer-label")
        yield ProgressBar(id="transfer-progress", show_eta=False)


class FileTransfers(FilesPane):

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
