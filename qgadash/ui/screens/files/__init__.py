"""A VM's files: the browser (screen.py) with its viewer and transfers, each a part of
one screen over shared state (pane.py)."""

from qgadash.ui.screens.files.screen import FilesScreen, listing_note
from qgadash.ui.screens.files.transfers import TransferBar
from qgadash.ui.screens.files.viewer import VIEW_CAP
from qgadash.ui.screens.modals.prompt import PromptScreen

__all__ = ["VIEW_CAP", "FilesScreen", "PromptScreen", "TransferBar", "listing_note"]
