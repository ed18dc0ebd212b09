"""Keys every screen's footer shows whatever its width: help and quit.

Textual's footer lists bindings from the focused widget up to the app, so the app's
`?` and `q` came last and were the first cut on a narrow terminal. Each screen lists
these first; they carry the app's binding ids, so a keymap rebinds them with the app's.
"""

from __future__ import annotations

from textual.binding import Binding

__all__ = ["PINNED_BINDINGS", "PINNED_IDS"]

PINNED_BINDINGS = (
    Binding("question_mark", "app.help", "Help", id="help"),
    Binding("q", "app.quit", "Quit", id="quit"),
)
PINNED_IDS = frozenset(b.id for b in PINNED_BINDINGS)
