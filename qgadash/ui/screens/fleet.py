"""The home screen: one row per VM, filter, marks, sort, and the header that says what is wrong."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from qgadash.fleet.model import VmSnapshot
from qgadash.ui import bindings, messages, verbs
from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.fleet_rows import ShownRows
from qgadash.ui.fleet_view import (
    COLUMN_INDEX,
    COLUMNS,
    SORTABLE,
    FleetCounts,
    FleetFilter,
    agent_label,
    clock_key,
    column_label,
    counts_from_tally,
    header_text,
    hold_summary,
    is_fault,
    placeholder_values,
    row_values,
)
from qgadash.ui.formatting import format_countdown
from qgadash.ui.plain import plain
from qgadash.ui.screens.modals import MessageScreen
from qgadash.ui.widgets.fleet_table import FleetTable, RowValues

__all__ = ["ACTION_BINDINGS", "FleetScreen"]

# Actions that change guests: absent (not merely refused) in read-only mode.
ACTION_BINDINGS = frozenset({"freeze", "thaw", "power", "exec", "dismiss_thaw_error"})
# Sort columns whose values do not change while polling; the others are re-sorted when
# a shown row's sort value changed, at most once every RESORT_SECONDS (rows that jump
# four times a second cannot be read, and a re-sort redraws every row on screen).
_STATIC_SORTS = frozenset({"vm", "hv"})
RESORT_SECONDS = 1.0
# --low-bandwidth: FULL, LOAD, RTT and SEEN of a row redrawn at most this often.
LOW_BANDWIDTH_SECONDS = 30.0


class FleetScreen(Screen[None]):
    # The table, not the filter (the first focusable widget, Textual's default): the
    # screen takes this focus as it composes and whenever it resumes with none, while
    # `table.focus()` only lands a message later. Keys pressed in between (a script, a
    # fast typist, an auto-pilot started eagerly on Python 3.12+) went into the filter.
    AUTO_FOCUS = "#fleet-table"
    BINDINGS: ClassVar[list[BindingType]] = list(bindings.FLEET_SCREEN)

    def __init__(self) -> None:
        super().__init__(id="fleet")
        self.marks: set[str] = set()
        self.filter = FleetFilter()
        self.faults_only = False
        self.sort_column = "vm"
        self.sort_reverse = False
        # The shown VMs with their sort values and text widths, kept as rows change: a
        # re-sort or a batch does not visit every snapshot (fleet_rows.py).
        self._rows = ShownRows()
        self._counts: FleetCounts | None = None
        self._header_key: Any = None
        self._resort_pending = False
        self._sorted_at = 0.0
        self._content: dict[str, int] = {}
        self._row_keys: tuple[bool | None, bool | None] = (None, None)
        self._status: Text | None = None  # what the shown-count line says now
        self._cursor_text: Text | None = None  # what the cursor line says now
        # The clock-dependent part of each row as the last tick saw it (`clock_key`).
        self._clock: dict[str, tuple[int | None, int | None]] = {}
        self.table = FleetTable(id="fleet-table")

    @property
    def qapp(self) -> Dashboard:
        return dashboard_of(self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-header")
        with Horizontal(id="filter-bar"):
            yield Static("filter:", id="filter-label")
            yield Input(
                placeholder="what the rows show · ip: os: tag: · !not · glob*", id="filter-input"
            )
            yield Static(id="shown-count")
        yield self.table
        yield Static(id="cursor-line")
        yield Footer()

    def on_mount(self) -> None:
        self.table.palette = self.qapp.palette
        if self.qapp.display_settings.low_bandwidth:
            self.table.slow_seconds = LOW_BANDWIDTH_SECONDS
        self.table.show_optional(self.qapp.optional_columns)
        self.table.focus()
        if self.filter.text:
            self.query_one("#filter-input", Input).value = self.filter.text
        self.rebuild()

    @property
    def live(self) -> bool:
        """Composed and not being torn down: safe to update."""
        return self.table.is_mounted and self.table.is_attached

    # -- the model behind the rows ------------------------------------------------------

    def now(self) -> float:
        return self.qapp.clock()

    def _wanted(self, snap: VmSnapshot) -> bool:
        if self.faults_only and not is_fault(snap):
            return False
        return self.filter.matches(snap)

    def values_of(self, vm_id: str, now: float | None = None) -> RowValues:
        snap = self.qapp.engine.store.get(vm_id)
        if snap is None:  # removed; the next batch takes its row away
            return placeholder_values(vm_id)
        return row_values(snap, self.now() if now is None else now, vm_id in self.marks)

    def _values_map(self, vm_ids: Iterable[str], now: float) -> dict[str, RowValues]:
        """Row values of those VMs still in the store (a removal may not be applied yet)."""
        store = self.qapp.engine.store
        out: dict[str, RowValues] = {}
        for vm_id in vm_ids:
            snap = store.get(vm_id)
            if snap is not None:
                out[vm_id] = row_values(snap, now, vm_id in self.marks)
        return out

    def rebuild(self) -> None:
        """Recompute which VMs are shown and in what order (filter, faults, sort changed)."""
        if not self.live:
            return
        store = self.qapp.engine.store
        self._rows.reset(
            (s for s in store.snapshots() if self._wanted(s)), self.sort_column, self.sort_reverse
        )
        self._reorder(force_header=True)

    def _reorder(self, force_header: bool = False) -> None:
        """Show the shown rows in sort order again, columns fitted to exactly what they
        hold (a re-sort, a row come or gone: no snapshot is visited)."""
        self._resort_pending = False
        self._sorted_at = time.monotonic()
        self._clock.clear()
        order = self._rows.order()
        with self.app.batch_update():
            self._content = self._rows.content_widths()
            self.table.show_sort(self.sort_column, self.sort_reverse)
            self.table.set_content_widths(self._content)
            self.table.reconcile(order, self.values_of)
            self._refresh_counts(force=force_header)
            self._update_status()
            self._update_cursor_line()

    def apply_changes(self, changed: set[str], removed: set[str], hypervisors: bool) -> None:
        """One tick's worth of store changes, applied as one batch."""
        store = self.qapp.engine.store
        rows = self._rows
        need_reorder = any(vm_id in rows for vm_id in removed)
        self.marks -= removed
        rows.forget(removed)
        moved = False  # a shown row's sort value changed
        kept: dict[str, VmSnapshot] = {}  # shown before and after
        everything = not self.faults_only and not self.filter  # every VM is wanted
        for vm_id in changed:
            snap = store.get(vm_id)
            if snap is None:
                continue
            shown = vm_id in rows
            if everything or self._wanted(snap):
                moved |= rows.put(snap, vm_id)
                if shown:
                    kept[vm_id] = snap
                else:
                    need_reorder = True
            elif shown:
                rows.discard(vm_id)
                need_reorder = True
        updates: dict[str, RowValues] = {}
        if kept:
            # Rows on screen get their new values; the others are recomputed when shown
            # (at 10,000 VMs most changes are off screen).
            visible = self.table.visible_of(kept)
            now = self.now()
            marks = self.marks
            for vm_id in visible:
                updates[vm_id] = row_values(kept[vm_id], now, vm_id in marks)
            self.table.forget(vm_id for vm_id in kept if vm_id not in visible)
            # A column grows as soon as new content needs it (it shrinks on a reorder).
            wider = rows.content_widths()
            if any(wider[k] > self._content.get(k, 0) for k in wider):
                self._content = {k: max(v, self._content.get(k, 0)) for k, v in wider.items()}
                self.table.set_content_widths(self._content)
        if moved and self.sort_column not in _STATIC_SORTS:
            self._resort_pending = True
        if self._resort_pending and time.monotonic() - self._sorted_at >= RESORT_SECONDS:
            need_reorder = True
        with self.app.batch_update():
            self.table.update_values(updates)
            if need_reorder:
                self._reorder()
            elif changed or removed or hypervisors:
                self._refresh_counts()
                cursor = self.table.cursor_vm
                if cursor in changed:
                    self._update_cursor_line()

    def tick(self) -> None:
        """Clock-driven cells (countdowns, ages) of the rows on screen; a due re-sort."""
        if not self.live:
            return
        if self._resort_pending and time.monotonic() - self._sorted_at >= RESORT_SECONDS:
            self._reorder()
        now = self.now()
        store = self.qapp.engine.store
        clock = self._clock
        changed: dict[str, RowValues] = {}
        for vm_id in self.table.visible_ids():
            snap = store.get(vm_id)
            if snap is None:
                continue
            # Only rows whose countdown or SEEN step moved: most ticks rebuild none.
            key = clock_key(snap, now)
            if clock.get(vm_id) != key:
                clock[vm_id] = key
                changed[vm_id] = row_values(snap, now, vm_id in self.marks)
        if changed:
            self.table.update_values(changed)
        self.table.release_held()
        self._refresh_header()

    def on_resize(self) -> None:
        if self.live:
            self._refresh_header()

    def redraw(self) -> None:
        """Everything again (the theme changed)."""
        self.table.palette = self.qapp.palette
        self.table.redraw_all()
        self._refresh_counts(force=True)

    def _refresh_counts(self, force: bool = False) -> None:
        store = self.qapp.engine.store
        held = {h.vm_id for h in self.qapp.engine.holds()}
        self._counts = counts_from_tally(store.tally(), store.hypervisors(), held)
        self._refresh_header(force)

    def _refresh_header(self, force: bool = False) -> None:
        """Redraw the header if anything it shows changed (the next-thaw countdown ticks)."""
        counts = self._counts
        if counts is None:
            return
        qapp = self.qapp
        holds = hold_summary(qapp.engine.holds(), self.now(), settling=qapp.settling_journal)
        width = self.app.size.width or None
        key = (counts, holds, qapp.read_only, width)
        if not force and key == self._header_key:
            return
        self._header_key = key
        self.query_one("#fleet-header", Static).update(
            header_text(
                counts,
                label=qapp.config_label,
                read_only=qapp.read_only,
                palette=qapp.palette,
                holds=holds,
                width=width,
                low_bandwidth=qapp.display_settings.low_bandwidth,
            )
        )
        self._update_status()

    def _update_status(self) -> None:
        parts = [f"{len(self.table.order)} shown"]
        if self.marks:
            hidden = self._hidden_marks()
            parts.append(f"{len(self.marks)} marked" + (f" ({hidden} hidden)" if hidden else ""))
        if self.faults_only:
            parts.append("faults only")
        parts.append(f"by {column_label(self.sort_column, self.sort_column, self.sort_reverse)}")
        status = Text(" · ".join(parts), no_wrap=True)
        if status != self._status:  # not drawn (nor written to the terminal) again as is
            self._status = status
            self.query_one("#shown-count", Static).update(status)

    def _hidden_marks(self) -> int:
        """Marked VMs the filter hides."""
        return sum(1 for vm_id in self.marks if vm_id not in self._rows)

    def _update_cursor_line(self) -> None:
        line = self.query_one("#cursor-line", Static)
        vm_id = self.table.cursor_vm
        snap = self.qapp.engine.store.get(vm_id) if vm_id else None
        if snap is None:
            self._set_cursor_line(line, Text(""))
            return
        palette = self.qapp.palette
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append_text(plain(snap.id, 60, style="bold"))
        if snap.ref.tags:
            text.append("  tags: ")
            text.append_text(plain(", ".join(snap.ref.tags), 60))
        if snap.thaw_error:
            text.append("  THAW FAILED: ", style=palette.error)
            text.append_text(plain(snap.thaw_error, 120, style=palette.error))
            if not self.qapp.read_only:
                key = self.qapp.key_for("dismiss-thaw-error", "x")
                text.append(f"  ({key} dismisses)", style=palette.stale)
        life = snap.lifecycle
        if life is not None:
            ago = format_countdown(max(0.0, self.now() - life.since))
            text.append(f"  {agent_label(snap)} ({ago} ago)", style=palette.accent)
            key = self.qapp.key_for("forget", "d")
            text.append(f"  {key} removes the row", style=palette.stale)
        elif snap.error:
            text.append(f"  {snap.agent.value}: ", style=palette.warning)
            text.append_text(plain(snap.error, 160))
        self._set_cursor_line(line, text)

    def _set_cursor_line(self, line: Static, text: Text) -> None:
        if text != self._cursor_text:  # not drawn (nor written to the terminal) again as is
            self._cursor_text = text
            line.update(text)

    @on(FleetTable.RowHighlighted, "#fleet-table")
    def _cursor_moved(self, _: FleetTable.RowHighlighted) -> None:
        self._update_cursor_line()
        # x and d depend on the row under the cursor; the footer is redrawn (and written
        # to the terminal) only when they come or go, not on every cursor move.
        row_keys = (self.check_action("dismiss_thaw_error", ()), self.check_action("forget", ()))
        if row_keys != self._row_keys:
            self._row_keys = row_keys
            self.refresh_bindings()

    @on(FleetTable.HeaderSelected, "#fleet-table")
    def _header_clicked(self, event: FleetTable.HeaderSelected) -> None:
        key = event.column_key
        if key in SORTABLE:
            self.action_sort_column(key)

    # -- filter -------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        self.filter = FleetFilter.parse(text)
        if not self.live:
            return  # on_mount draws it
        inp = self.query_one("#filter-input", Input)
        if inp.value != text:
            inp.value = text
        self.rebuild()

    def action_filter(self) -> None:
        self.open_filter()

    def open_filter(self) -> None:
        """Focus the filter now, not a message later: keys already on their way (a paste,
        a laggy link) must land in it, not on the table's shortcuts. (The app calls this
        as the `/` arrives, before the keys behind it are routed; see QgadashApp.)"""
        self.set_focus(self.query_one("#filter-input", Input))

    @property
    def filter_focused(self) -> bool:
        return self.live and self.focused is self.query_one("#filter-input", Input)

    @on(Input.Changed, "#filter-input")
    def _filter_typed(self, event: Input.Changed) -> None:
        self.filter = FleetFilter.parse(event.value)
        self.rebuild()

    @on(Input.Submitted, "#filter-input")
    def _filter_done(self, _: Input.Submitted) -> None:
        self.table.focus()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and self.focused is self.query_one("#filter-input", Input):
            event.stop()
            self.table.focus()

    # -- marks --------------------------------------------------------------------------

    def _redraw_marks(self, vm_ids: set[str]) -> None:
        if not self.live:
            return
        now = self.now()
        self.table.update_values(self._values_map([v for v in vm_ids if v in self._rows], now))
        self._update_status()

    def set_marks(self, vm_ids: set[str]) -> None:
        old, self.marks = self.marks, set(vm_ids)
        self._redraw_marks(old ^ self.marks)

    def action_mark(self) -> None:
        vm_id = self.table.cursor_vm
        if vm_id is None:
            return
        self.marks ^= {vm_id}
        self._redraw_marks({vm_id})
        self.table.action_cursor_down()

    def action_mark_all(self) -> None:
        shown = set(self.table.order)
        new = shown - self.marks
        self.marks |= shown
        self._redraw_marks(new)

    def action_clear(self) -> None:
        """Esc: the filter and the faults-only view go; marks stay (Ctrl-\\ unmarks)."""
        if self.filter or self.faults_only:
            self.faults_only = False
            self.set_filter("")

    def action_clear_marks(self) -> None:
        """Unmark every VM; asks first when some marked VMs are not on screen."""
        if not self.marks:
            self.notify("No VM is marked.", markup=False)
            return
        hidden = self._hidden_marks()
        if not hidden:
            self.set_marks(set())
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.set_marks(set())

        total = len(self.marks)
        body = Text(f"{total} VM{'s' if total != 1 else ''} marked; ")
        body.append(
            f"{hidden} of them {'are' if hidden != 1 else 'is'} hidden by the filter "
            "and would be unmarked too.",
            style=self.qapp.palette.warning,
        )
        self.app.push_screen(
            MessageScreen("Unmark all?", body, safe="Cancel", risky=f"Unmark {total}"),
            answered,
        )

    def targets(self) -> tuple[list[str], str]:
        """The marked VMs, or the one under the cursor; and how to say which."""
        if self.marks:
            ids = sorted(self.marks)
            return ids, f"{len(ids)} marked VM{'s' if len(ids) != 1 else ''}"
        vm_id = self.table.cursor_vm
        if vm_id is None:
            return [], "no VM"
        return [vm_id], "the VM under the cursor"

    # -- sort, faults, jump ---------------------------------------------------------------

    def sort_by(self, column: str, reverse: bool) -> None:
        self.sort_column = column
        self.sort_reverse = reverse
        self.rebuild()

    def action_sort_column(self, column: str) -> None:
        """Shift+letter or a header click: sort by that column; again: the other way.
        Numbers (FULL, LOAD, RTT, SEEN) start with the biggest. An optional column that
        is off is not sorted by (its values are not polled): the palette turns it on."""
        if COLUMNS[COLUMN_INDEX[column]].optional and column not in self.qapp.optional_columns:
            label = COLUMNS[COLUMN_INDEX[column]].label
            self.notify(f"The {label} column is off (ctrl+p: Show the {label} column)")
            return
        if column == self.sort_column:
            self.sort_by(column, not self.sort_reverse)
        else:
            self.sort_by(column, COLUMNS[COLUMN_INDEX[column]].descending_first)

    def action_sort_next(self) -> None:
        shown = [
            k
            for k in SORTABLE
            if not COLUMNS[COLUMN_INDEX[k]].optional or k in self.qapp.optional_columns
        ]
        i = shown.index(self.sort_column) if self.sort_column in shown else -1
        column = shown[(i + 1) % len(shown)]
        self.sort_by(column, COLUMNS[COLUMN_INDEX[column]].descending_first)

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)

    def action_faults(self) -> None:
        self.faults_only = not self.faults_only
        self.rebuild()

    def action_jump(self) -> None:
        self.post_message(messages.OpenJump())

    def jump_to(self, vm_id: str) -> bool:
        """Cursor to `vm_id`; clears the filter if it hides that VM."""
        if self.qapp.engine.store.get(vm_id) is None:
            return False
        if vm_id not in self._rows:
            self.faults_only = False
            self.set_filter("")
        self.table.move_to(vm_id)
        self.table.focus()
        return True

    # -- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTION_BINDINGS and self.qapp.read_only:
            return False
        if action == "dismiss_thaw_error":
            vm_id = self.table.cursor_vm if self.is_mounted else None
            snap = self.qapp.engine.store.get(vm_id) if vm_id else None
            return bool(snap and snap.thaw_error)
        if action == "forget":
            vm_id = self.table.cursor_vm if self.is_mounted else None
            snap = self.qapp.engine.store.get(vm_id) if vm_id else None
            return bool(snap and snap.lifecycle)
        return True

    def action_details(self) -> None:
        vm_id = self.table.cursor_vm
        if vm_id:
            self.post_message(messages.OpenDetails(vm_id))

    def action_files(self) -> None:
        vm_id = self.table.cursor_vm
        if vm_id:
            self.post_message(messages.OpenFiles(vm_id))

    def action_freeze(self) -> None:
        ids, how = self.targets()
        if ids:
            self.post_message(messages.ConfirmFreeze(ids, how))

    def action_thaw(self) -> None:
        ids, how = self.targets()
        if ids:
            self.post_message(messages.ConfirmThaw(ids, how))

    def action_power(self) -> None:
        ids, how = self.targets()
        if ids:
            self.post_message(messages.OpenPower(ids, how))

    def action_exec(self) -> None:
        ids, how = self.targets()
        if ids:
            verbs.prompt_exec(self.qapp, ids, how)

    def action_dismiss_thaw_error(self) -> None:
        vm_id = self.table.cursor_vm
        if vm_id:
            self.post_message(messages.DismissThawError(vm_id))

    def action_forget(self) -> None:
        vm_id = self.table.cursor_vm
        if vm_id:
            verbs.forget(self.qapp, vm_id)
