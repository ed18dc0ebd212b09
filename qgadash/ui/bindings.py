"""Every key binding of the dashboard, as data: one place to read (and the help screen
reads it), one place to change.

Each screen's class says `BINDINGS = list(bindings.X)`. Binding ids are what a
`[keys]` table in hosts.toml rebinds (contracts.md), so an id never changes meaning.
(The power dialog's 1-9 are made from its options, beside them in screens/modals.py.)
The footer lists bindings from the focused widget up to the app: each screen lists
PINNED first, so help and quit show whatever the width (they carry the app's ids, so a
keymap rebinds them with the app's).
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

from qgadash.ui.fleet_view import COLUMN_INDEX, COLUMNS, SORT_LETTERS

__all__ = [
    "APP",
    "DETAIL",
    "FILES",
    "FLEET_SCREEN",
    "FLEET_TABLE",
    "HELP",
    "MODAL_CANCEL",
    "MODAL_CLOSE",
    "PINNED",
    "PINNED_IDS",
    "SECTIONS",
]

PINNED: tuple[BindingType, ...] = (
    Binding("question_mark", "app.help", "Help", id="help"),
    Binding("q", "app.quit", "Quit", id="quit"),
)
PINNED_IDS = frozenset(b.id for b in PINNED if isinstance(b, Binding))

# Everywhere.
APP: tuple[BindingType, ...] = (
    Binding("question_mark", "help", "Help", id="help"),
    Binding("q", "quit", "Quit", id="quit"),
    Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="quit-now"),
)

# The fleet table (the focused widget on the fleet screen).
FLEET_TABLE: tuple[BindingType, ...] = (
    Binding("enter", "screen.details", "Details", id="details"),
    Binding("up", "cursor_up", "Up", show=False, id="row-up"),
    Binding("down", "cursor_down", "Down", show=False, id="row-down"),
    Binding("pageup", "page_up", "Page up", show=False, id="page-up"),
    Binding("pagedown", "page_down", "Page down", show=False, id="page-down"),
    # k9s / vim / less: one row, first row, last row.
    Binding("j", "cursor_down", "Down", show=False, id="down"),
    Binding("k", "cursor_up", "Up", show=False, id="up"),
    Binding("g,home", "scroll_top", "First row", show=False, id="first"),
    Binding("G,end", "scroll_bottom", "Last row", show=False, id="last"),
)

# The fleet screen.
FLEET_SCREEN: tuple[BindingType, ...] = (
    # First, so the footer shows them whatever its width (the app's own come last).
    *PINNED,
    Binding("slash", "filter", "Filter", id="filter"),
    Binding("space", "mark", "Mark", id="mark"),
    Binding("a", "mark_all", "Mark shown", id="mark-all"),
    # Unmarking is a key of its own (k9s: Ctrl-\), never the Esc reflex.
    Binding("ctrl+backslash", "clear_marks", "Unmark all", id="clear-marks"),
    Binding("escape", "clear", "Clear filter", show=False, id="clear"),
    Binding("f", "freeze", "Freeze", id="freeze"),
    Binding("t", "thaw", "Thaw", id="thaw"),
    Binding("p", "power", "Power", id="power"),
    Binding("e", "exec", "Exec", id="exec"),
    Binding("b", "files", "Files", id="files"),
    Binding("z", "faults", "Faults only", id="faults"),
    Binding("s", "sort_next", "Sort", id="sort"),
    Binding("S", "sort_reverse", "Reverse sort", show=False, id="sort-reverse"),
    *(
        Binding(
            letter,
            f"sort_column('{key}')",
            f"Sort by {COLUMNS[COLUMN_INDEX[key]].label} (again: reverse)",
            show=False,
            id=f"sort-{key}",
        )
        for letter, key in SORT_LETTERS.items()
    ),
    Binding("colon", "jump", "Jump", id="jump"),
    Binding(
        "x", "dismiss_thaw_error", "Dismiss thaw error", show=False, id="dismiss-thaw-error"
    ),
    Binding("d", "forget", "Remove row", show=False, id="forget"),
)

# A VM's details.
DETAIL: tuple[BindingType, ...] = (
    # First, so the footer shows them whatever its width (the app's own come last).
    *PINNED,
    Binding("escape", "app.pop_screen", "Back", id="detail.back"),
    Binding("1", "tab('overview')", "Overview", show=False, id="detail.overview"),
    Binding("2", "tab('network')", "Network", show=False, id="detail.network"),
    Binding("3", "tab('storage')", "Storage", show=False, id="detail.storage"),
    Binding("4", "tab('files')", "Files", show=False, id="detail.files-tab"),
    Binding("5", "tab('agent')", "Agent", show=False, id="detail.agent"),
    Binding("6", "tab('admin')", "Admin", show=False, id="detail.admin"),
    Binding("u", "key_user", "SSH keys of…", show=False, id="detail.key-user"),
    Binding("b", "files", "Files", id="detail.files"),
    Binding("f", "freeze", "Freeze", id="detail.freeze"),
    Binding("t", "thaw", "Thaw", id="detail.thaw"),
    Binding("p", "power", "Power", id="detail.power"),
)

# A VM's files (a screen of its own, or the details' Files tab).
FILES: tuple[BindingType, ...] = (
    # First, so the footer shows them whatever its width (the app's own come last).
    *PINNED,
    Binding("escape", "back", "Back", id="files.back"),
    Binding("backspace", "up", "Parent", id="files.up"),
    Binding("o", "open_path", "Open path", id="files.open-path"),
    Binding("f", "follow", "Follow", id="files.follow"),
    Binding("m", "more", "More", id="files.more"),
    Binding("d", "download", "Download", id="files.download"),
    Binding("u", "upload", "Upload", id="files.upload"),
    Binding("c", "cancel_transfer", "Cancel transfer", id="files.cancel"),
    Binding("r", "reload", "Reload folder", id="files.reload"),
    # Opened as the details' Files tab: the other tabs' keys go back to them.
    *(
        Binding(key, f"tab('{tab}')", tab.capitalize(), show=False, id=f"files.tab-{tab}")
        for key, tab in (
            ("1", "overview"),
            ("2", "network"),
            ("3", "storage"),
            ("5", "agent"),
            ("6", "admin"),
        )
    ),
)

# The help screen.
HELP: tuple[BindingType, ...] = (
    Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
)

# Every dialog: Esc is Cancel (the safe answer).
MODAL_CANCEL: tuple[BindingType, ...] = (Binding("escape", "cancel", "Cancel", id="modal.cancel"),)
# A dialog that only reports (a running action): Esc closes it.
MODAL_CLOSE: tuple[BindingType, ...] = (Binding("escape", "close", "Close", id="modal.close"),)

# What the help screen lists, in order.
SECTIONS: tuple[tuple[str, tuple[BindingType, ...]], ...] = (
    ("Fleet", FLEET_TABLE + FLEET_SCREEN),
    ("Details", DETAIL),
    ("Files", FILES),
    ("Everywhere", APP),
)
