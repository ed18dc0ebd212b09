"""What the files screen's parts share: the VM, the folder and its listing, what the
viewer has open, the running transfer. The browser (screen.py), the viewer (viewer.py)
and the transfers (transfers.py) are each a class over this one, combined in
`FilesScreen`; each part's attributes stay on the screen, where tests and the app see
them.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.screen import Screen
from textual.widgets import DataTable
from textual.worker import Worker

from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.engine_api import DirEntry, DirListing
from qgadash.ui.file_view import (
    LineBuffer,
)


class FilesPane(Screen[None]):
    """The state of one VM's files screen; the parts below add behaviour to it."""

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

    # What each part offers the others (defined by the part that owns it).
    def view(self, path: str) -> None:
        raise NotImplementedError

    def action_reload(self) -> None:
        raise NotImplementedError
