"""The fleet DataTable: rows keyed by VM id, updated by diff, never cleared.

`DataTable` moves rows one at a time (each `remove_row` renumbers every row), which is
too slow when a filter hides 4,000 of 5,000 VMs, and sorts only by cell values, which
here are `Text`. So this subclass adds two batch operations, `reconcile` (the shown ids
in the wanted order) and `update_values` (changed cells only), both keeping the cursor
on the same VM at the same place on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.binding import BindingType
from textual.geometry import Size
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, ColumnKey, RowKey

from qgadash.ui import bindings
from qgadash.ui.fleet_view import (
    COLUMN_INDEX,
    COLUMN_KEYS,
    COLUMNS,
    CellValue,
    Palette,
    column_label,
    fit_widths,
    render_cell,
)

__all__ = ["FleetTable"]

RowValues = tuple[CellValue, ...]
SegmentLines = list[list[Segment]]
CELL_CACHE_SIZE = 20_000


class FleetTable(DataTable[Text]):
    """One row per VM; the row key is the VM id."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.FLEET_TABLE)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.palette = Palette()
        self._order: list[str] = []  # shown VM ids, top to bottom
        self._drawn: dict[str, RowValues] = {}
        self._column_keys = [ColumnKey(k) for k in COLUMN_KEYS]
        # Which of COLUMNS are shown (a narrow terminal drops some; see fit_widths).
        self._shown: tuple[int, ...] = tuple(range(len(COLUMNS)))
        self._values_of: Callable[[str], RowValues] | None = None
        self._content: dict[str, int] = {}  # how wide each text column's content is
        self._sort: tuple[str, bool] = ("vm", False)
        # Rendered cells by position and state, kept while the cell object is the same.
        self._cell_lines: dict[tuple[object, ...], tuple[object, SegmentLines]] = {}

    def on_mount(self) -> None:
        self._add_columns({c.key: c.wanted for c in COLUMNS})

    def _label(self, key: str) -> Text:
        column = COLUMNS[COLUMN_INDEX[key]]
        return Text(
            column_label(key, *self._sort), justify="right" if column.justify == "right" else "left"
        )

    def _add_columns(self, widths: dict[str, int]) -> None:
        for col in COLUMNS:
            if col.key in widths:
                self.add_column(self._label(col.key), width=widths[col.key], key=col.key)

    def show_sort(self, column: str, reverse: bool) -> None:
        """An arrow on the header of the column the rows are sorted by."""
        if (column, reverse) == self._sort:
            return
        self._sort = (column, reverse)
        for key, col in self.columns.items():
            if key.value is not None:
                col.label = self._label(key.value)
        self._require_update_dimensions = True
        self.refresh()

    def set_content_widths(self, content: dict[str, int]) -> None:
        """The width each text column's content needs; columns are fitted again if it
        changed."""
        if content != self._content:
            self._content = dict(content)
            self.fit_columns()

    def on_resize(self) -> None:
        self.fit_columns()

    @property
    def shown_columns(self) -> tuple[str, ...]:
        return tuple(COLUMNS[i].key for i in self._shown)

    def fit_columns(self) -> None:
        """Give VM, OS and hostname the width the screen has to spare, and drop the
        least needed columns when the screen is too narrow for all of them."""
        available = self._available_width()
        if available <= 0 or not self.columns:
            return
        widths = fit_widths(available, self.cell_padding, self._content)
        shown = tuple(i for i, c in enumerate(COLUMNS) if c.key in widths)
        if shown != self._shown:
            self._rebuild(shown, widths)
            return
        changed = False
        for key, width in widths.items():
            column = self.columns.get(ColumnKey(key))
            if column is not None and column.width != width:
                column.width = width
                changed = True
        if changed:
            self._require_update_dimensions = True
            self._update_count += 1
            self.check_idle()
            self.refresh(layout=True)

    def _available_width(self) -> int:
        """The width the columns may fill: the widget's, less the vertical scrollbar when
        the rows will need one (known from the row count, before Textual lays it out)."""
        width = self.size.width
        header = self.header_height if self.show_header else 0
        if self.row_count + header > self.size.height:
            width -= self.styles.scrollbar_size_vertical
        return width

    def _rebuild(self, shown: tuple[int, ...], widths: dict[str, int]) -> None:
        """Columns shown change: build the table anew (rare: the terminal was resized
        across a threshold), keeping the rows, their order and the cursor's VM."""
        order, cursor_vm = list(self._order), self.cursor_vm
        self.clear(columns=True)
        self._order = []
        self._drawn.clear()
        self._cell_lines.clear()
        self._shown = shown
        self._add_columns(widths)
        if self._values_of is not None and order:
            self.reconcile(order, self._values_of)
            if cursor_vm is not None:
                self.move_to(cursor_vm)

    # -- reading -----------------------------------------------------------------------

    @property
    def order(self) -> Sequence[str]:
        return self._order

    @property
    def cursor_vm(self) -> str | None:
        if not self._order:
            return None
        row = self.cursor_row
        return self._order[row] if 0 <= row < len(self._order) else None

    def visible_ids(self) -> list[str]:
        """Ids of the rows on screen now (all rows have height 1)."""
        top = int(self.scroll_y)
        height = max(
            0,
            self.scrollable_content_region.height - (self.header_height if self.show_header else 0),
        )
        return self._order[top : top + height + 1]

    # -- writing -----------------------------------------------------------------------

    def redraw_all(self, values: dict[str, RowValues]) -> None:
        """Rebuild every cell (after a theme change)."""
        self._drawn.clear()
        self._cell_lines.clear()
        self.update_values(values)

    def update_values(self, changed: dict[str, RowValues]) -> int:
        """Redraw the cells whose value changed; returns how many cells were touched."""
        touched = 0
        palette = self.palette
        keys = self._column_keys
        rows = self._row_locations
        for vm_id, values in changed.items():
            old = self._drawn.get(vm_id)
            if old == values:
                continue
            row_key = RowKey(vm_id)
            if row_key not in rows:
                continue
            for index in self._shown:
                value = values[index]
                if old is None or old[index] != value:
                    self.update_cell(
                        row_key, keys[index], render_cell(index, value, palette), update_width=False
                    )
                    touched += 1
            self._drawn[vm_id] = values
        return touched

    def reconcile(self, order: Sequence[str], values_of: Callable[[str], RowValues]) -> None:
        """Show exactly `order`, top to bottom: remove, add and move rows by key.

        The VM under the cursor keeps the cursor and, when it stays shown, its line on
        the screen.
        """
        self._values_of = values_of
        cursor_vm = self.cursor_vm
        screen_line = self.cursor_row - int(self.scroll_y)
        wanted = list(order)
        wanted_set = set(wanted)
        gone = [vm_id for vm_id in self._order if vm_id not in wanted_set]
        if gone:
            self._remove_rows(gone)
        have = set(self._order)
        for vm_id in wanted:
            if vm_id not in have:
                values = values_of(vm_id)
                self._drawn[vm_id] = values
                self.add_row(
                    *(render_cell(i, values[i], self.palette) for i in self._shown),
                    key=vm_id,
                )
        if wanted != self._order_of_table():
            self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(wanted)})
            self._update_count += 1
            self.refresh()
        self._order = wanted
        self._restore_cursor(cursor_vm, screen_line)
        self.fit_columns()  # a scrollbar may have come or gone with the rows

    def move_to(self, vm_id: str) -> bool:
        """Put the cursor on `vm_id` if it is shown."""
        try:
            index = self._order.index(vm_id)
        except ValueError:
            return False
        self.move_cursor(row=index, animate=False)
        return True

    # -- internals ---------------------------------------------------------------------

    def _order_of_table(self) -> list[str]:
        get_key = self._row_locations.get_key
        out = []
        for i in range(self.row_count):
            key = get_key(i)
            assert key is not None and key.value is not None
            out.append(key.value)
        return out

    def _remove_rows(self, vm_ids: Iterable[str]) -> None:
        gone = {RowKey(v) for v in vm_ids}
        remaining = [k for k in self._order if RowKey(k) not in gone]
        for row_key in gone:
            if row_key not in self.rows:
                continue
            for column_key in self._data.get(row_key, {}):
                self._updated_cells.discard(CellKey(row_key, column_key))
            del self.rows[row_key]
            del self._data[row_key]
            self._new_rows.discard(row_key)
            assert row_key.value is not None
            self._drawn.pop(row_key.value, None)
        self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(remaining)})
        self._order = remaining
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        self.hover_coordinate = self.hover_coordinate
        self._update_count += 1
        self.check_idle()
        self.refresh(layout=True)

    def _restore_cursor(self, vm_id: str | None, screen_line: int) -> None:
        if vm_id is None or vm_id not in self._drawn:
            return
        index = self._order.index(vm_id)
        if index == self.cursor_row:
            return
        self.move_cursor(row=index, animate=False, scroll=False)
        target = max(0, index - max(0, screen_line))
        # The virtual size is recomputed on idle; scroll once it is.
        self.call_after_refresh(self.scroll_to, y=target, animate=False, immediate=True)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        """DataTable drops every rendered cell whenever any cell changes (its caches are
        keyed on an update counter). Here a cell's rendering is reused for as long as the
        cell object is the same one, so a tick redraws only the cells it replaced."""
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        row = self._data.get(row_key) if row_key is not None else None
        if row is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cell = row.get(column_key)
        key = (
            row_key,
            column_key,
            row_index,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        hit = self._cell_lines.get(key)
        if hit is not None and hit[0] is cell:
            return hit[1]
        lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        if len(self._cell_lines) > CELL_CACHE_SIZE:
            self._cell_lines.clear()
        self._cell_lines[key] = (cell, lines)
        return lines

    def notify_style_update(self) -> None:
        self._cell_lines.clear()
        super().notify_style_update()

    def _get_offsets(self, y: int) -> tuple[RowKey, int]:
        """Every row is one line high: row `y` is at line `y` (DataTable builds a list of
        every line of every row for this, after every change)."""
        if self.show_header:
            if y < self.header_height:
                return self._header_row_key, y
            y -= self.header_height
        key = self._row_locations.get_key(y)
        if key is None:
            raise LookupError(f"Y coord {y!r} is greater than total height")
        return key, 0

    @property
    def _total_row_height(self) -> int:
        return self.row_count

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Every column has a fixed width and every row height 1: no need to measure cells."""
        width = sum(column.get_render_width(self) for column in self.columns.values())
        header = self.header_height if self.show_header else 0
        self.virtual_size = Size(width + self._row_label_column_width, self.row_count + header)
