"""The fleet table: one line per VM, drawn with Textual's Line API (public API only).

Why not `DataTable`: it repaints the whole widget whenever any cell changes, keeps a
list of every line of every row, and moving 4,000 of 5,000 rows for a filter costs a
renumbering per row; the old subclass patched its private attributes to avoid that.
This widget is a `ScrollView` that renders only the lines on screen (`render_line`),
so a frame costs what the terminal shows, not what the fleet holds:

- rows are keyed by VM id; `reconcile` shows exactly a given order of ids, and
  `update_values` takes the changed cell values (`fleet_view.row_values`);
- a cell whose value changed refreshes the region of that cell alone, so Textual
  rewrites just those terminal cells; a tick where no shown value changed refreshes
  nothing and writes nothing;
- each rendered line is cached (a `Strip`, adjacent equal styles merged) until its
  values, the column widths, the cursor or the styles change.

It relies on Textual's documented API only: `ScrollView`, `Strip`, `refresh(Region)`,
component classes, `Message`; `pyproject.toml` states the range it is tested with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from qgadash.ui import bindings
from qgadash.ui.fleet_view import (
    COLUMN_INDEX,
    COLUMNS,
    CellValue,
    Palette,
    column_label,
    fit_widths,
    render_cell,
)

__all__ = ["FleetTable", "RowValues", "TableColumn"]

RowValues = tuple[CellValue, ...]
# Low-bandwidth mode: a row's changes that touch only these columns wait until the row's
# last such redraw is `slow_seconds` old (FleetScreen.tick offers them again 4 times a
# second, so they are drawn when due). State, freeze, names and addresses never wait.
CELL_CACHE_SIZE = 20_000
SLOW_COLUMNS = frozenset(COLUMN_INDEX[k] for k in ("full", "load", "cpu", "io", "rtt", "seen"))


@dataclass(slots=True)
class TableColumn:
    """A shown column: its key, header label and content width (padding excluded)."""

    key: str
    label: Text
    width: int

    def get_render_width(self, table: FleetTable) -> int:
        """Width on screen, padding included (what `DataTable`'s columns answer too)."""
        return self.width + 2 * table.cell_padding


class FleetTable(ScrollView, can_focus=True):
    """One row per VM; rows are addressed by VM id."""

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.FLEET_TABLE)

    COMPONENT_CLASSES: ClassVar[set[str]] = {"fleet-table--header", "fleet-table--cursor"}

    # DataTable's look, so the screen did not change when the widget did.
    DEFAULT_CSS = """
    FleetTable {
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .fleet-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .fleet-table--header {
                background-tint: $foreground 5%;
            }
        }
        & > .fleet-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .fleet-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .fleet-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class RowHighlighted(Message):
        """The cursor is on another row (or on another VM at the same row)."""

        def __init__(self, table: FleetTable, vm_id: str | None, row: int) -> None:
            super().__init__()
            self.table = table
            self.vm_id = vm_id
            self.cursor_row = row

        @property
        def control(self) -> FleetTable:
            return self.table

    class HeaderSelected(Message):
        """A column header was clicked."""

        def __init__(self, table: FleetTable, column_key: str) -> None:
            super().__init__()
            self.table = table
            self.column_key = column_key

        @property
        def control(self) -> FleetTable:
            return self.table

    cell_padding = 1
    header_height = 1
    show_header = True

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.palette = Palette()
        self._order: list[str] = []  # shown VM ids, top to bottom
        self._index: dict[str, int] = {}  # VM id -> row
        # What each shown row shows; rows never on screen have none yet (`_values`
        # computes them when drawn): a table of 10,000 VMs pays for the lines it shows.
        self._drawn: dict[str, RowValues] = {}
        self._values_of: Callable[[str], RowValues] | None = None
        self._content: dict[str, int] = {}  # how wide each text column's content is
        self._optional: frozenset[str] = frozenset()  # optional columns turned on
        self._sort: tuple[str, bool] = ("vm", False)
        self._columns: list[TableColumn] = []
        self._shown: tuple[int, ...] = ()  # indexes into COLUMNS of the shown columns
        self._x: list[int] = []  # each shown column's left edge (virtual x)
        self._cursor = 0
        self._cursor_vm: str | None = None
        # Rendered lines: VM id -> (values, cursor?, strip); header strip.
        self._lines: dict[str, tuple[RowValues, bool, Strip]] = {}
        self._header: Strip | None = None
        # Padded segments of a cell, by (Text, width, justify); see _cell_segments.
        self._cells: dict[tuple[Hashable, int], list[Segment]] = {}
        # The same with the line's styles applied and equal styles joined, by (column,
        # value, width, base style, cursor style): a row drawn again (a changed RTT, a
        # re-sort) re-renders only the cells it has not shown like this before.
        self._styled: dict[tuple[Hashable, ...], list[Segment]] = {}
        self._styles_key: object = None
        # The widget's Rich style for one rendering pass (`render_lines`): Textual
        # computes it from every ancestor's styles on each read, and a pass drew each
        # line with two or three reads.
        self._pass_style: Style | None = None
        self.slow_seconds = 0.0  # > 0: low-bandwidth mode (see SLOW_COLUMNS)
        self._slow_at: dict[str, float] = {}  # VM id -> when its slow columns were drawn
        self._held: dict[str, RowValues] = {}  # values held back by low-bandwidth mode

    def on_mount(self) -> None:
        self._fit(self._content_width_default())

    # -- columns ---------------------------------------------------------------------

    @property
    def columns(self) -> dict[str, TableColumn]:
        return {c.key: c for c in self._columns}

    @property
    def shown_columns(self) -> tuple[str, ...]:
        return tuple(COLUMNS[i].key for i in self._shown)

    def _content_width_default(self) -> dict[str, int]:
        return {c.key: c.wanted for c in COLUMNS if not c.optional or c.key in self._optional}

    def _label(self, key: str) -> Text:
        column = COLUMNS[COLUMN_INDEX[key]]
        return Text(
            column_label(key, *self._sort), justify="right" if column.justify == "right" else "left"
        )

    def _fit(self, widths: dict[str, int]) -> bool:
        """Show these columns at these widths; True if anything changed."""
        shown = tuple(i for i, c in enumerate(COLUMNS) if c.key in widths)
        columns = [
            TableColumn(COLUMNS[i].key, self._label(COLUMNS[i].key), widths[COLUMNS[i].key])
            for i in shown
        ]
        if shown == self._shown and [(c.key, c.width) for c in columns] == [
            (c.key, c.width) for c in self._columns
        ]:
            return False
        self._shown = shown
        self._columns = columns
        x = 0
        self._x = []
        for c in columns:
            self._x.append(x)
            x += c.get_render_width(self)
        self._invalidate()
        self._update_virtual_size()
        return True

    def show_sort(self, column: str, reverse: bool) -> None:
        """An arrow on the header of the column the rows are sorted by."""
        if (column, reverse) == self._sort:
            return
        self._sort = (column, reverse)
        for c in self._columns:
            c.label = self._label(c.key)
        self._header = None
        self.refresh_lines(int(self.scroll_y), 1)

    def set_content_widths(self, content: dict[str, int]) -> None:
        """The width each text column's content needs; columns are fitted again if it
        changed."""
        if content != self._content:
            self._content = dict(content)
            self.fit_columns()

    @property
    def optional_columns(self) -> frozenset[str]:
        return self._optional

    def show_optional(self, keys: frozenset[str]) -> None:
        """Which optional columns (CPU %, DISK I/O) are on; the columns are fitted again."""
        if keys != self._optional:
            self._optional = keys
            self.fit_columns()

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Give VM, OS and hostname the width the screen has to spare, and drop the
        least needed columns when the screen is too narrow for all of them."""
        available = self._available_width()
        if available <= 0:
            return
        if self._fit(fit_widths(available, self.cell_padding, self._content, self._optional)):
            self.refresh()

    def _available_width(self) -> int:
        """The width the columns may fill: the widget's, less the vertical scrollbar when
        the rows will need one (known from the row count, before Textual lays it out)."""
        width = self.size.width
        if len(self._order) + self.header_height > self.size.height:
            width -= self.styles.scrollbar_size_vertical
        return width

    def _update_virtual_size(self) -> None:
        width = sum(c.get_render_width(self) for c in self._columns)
        self.virtual_size = Size(width, len(self._order) + self.header_height)

    # -- reading -----------------------------------------------------------------------

    @property
    def order(self) -> Sequence[str]:
        return self._order

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_vm(self) -> str | None:
        if not self._order:
            return None
        return self._order[self._cursor] if 0 <= self._cursor < len(self._order) else None

    def _page_height(self) -> int:
        return max(0, self.scrollable_content_region.height - self.header_height)

    def visible_ids(self) -> list[str]:
        """Ids of the rows on screen now (all rows have height 1)."""
        top = int(self.scroll_y)
        return self._order[top : top + self._page_height() + 1]

    def get_cell(self, vm_id: str, column: str) -> Text:
        """What the cell shows (for tests and tools; drawing does not go through here)."""
        if vm_id not in self._index:
            raise KeyError(vm_id)
        index = COLUMN_INDEX[column]
        return render_cell(index, self._values(vm_id)[index], self.palette)

    def _values(self, vm_id: str) -> RowValues:
        values = self._drawn.get(vm_id)
        if values is None:
            assert self._values_of is not None
            values = self._drawn[vm_id] = self._values_of(vm_id)
        return values

    def is_visible(self, vm_id: str) -> bool:
        """On screen now (its changes are drawn; others are recomputed when shown)."""
        row = self._index.get(vm_id)
        top = int(self.scroll_y)
        return row is not None and top <= row <= top + self._page_height()

    def visible_of(self, vm_ids: Iterable[str]) -> set[str]:
        """Those of `vm_ids` on screen now (`is_visible` of each, the screen's geometry
        read once: a batch at 10,000 VMs asks about a thousand rows)."""
        index = self._index
        top = int(self.scroll_y)
        bottom = top + self._page_height()
        out = set()
        for vm_id in vm_ids:
            row = index.get(vm_id)
            if row is not None and top <= row <= bottom:
                out.add(vm_id)
        return out

    # -- writing -----------------------------------------------------------------------

    def redraw_all(self) -> None:
        """Rebuild every cell (after a theme change)."""
        self._drawn.clear()
        self._invalidate()
        self.refresh()

    def forget(self, vm_ids: Iterable[str]) -> None:
        """These rows changed off screen: their values are computed again when shown."""
        for vm_id in vm_ids:
            self._drawn.pop(vm_id, None)
            self._lines.pop(vm_id, None)
            self._held.pop(vm_id, None)

    def update_values(self, changed: dict[str, RowValues]) -> int:
        """Take new cell values; refresh the screen cells whose value changed. Returns how
        many cells changed (shown columns only)."""
        touched = 0
        top = int(self.scroll_y)
        bottom = top + self._page_height()
        scroll_x = int(self.scroll_x)
        now = time.monotonic()
        for vm_id, values in changed.items():
            old = self._drawn.get(vm_id)
            if old is None or old == values:
                continue  # not drawn yet (computed when it is), not shown, or no change
            if self.slow_seconds:
                slow = [i in SLOW_COLUMNS for i, v in enumerate(values) if old[i] != v]
                if any(slow):
                    if all(slow) and now - self._slow_at.get(vm_id, -1e9) < self.slow_seconds:
                        self._held[vm_id] = values  # non-critical, drawn not long ago: later
                        continue
                    self._slow_at[vm_id] = now
                self._held.pop(vm_id, None)
            self._drawn[vm_id] = values
            self._lines.pop(vm_id, None)
            row = self._index[vm_id]
            on_screen = top <= row <= bottom
            for pos, index in enumerate(self._shown):
                if old[index] != values[index]:
                    touched += 1
                    if on_screen:
                        column = self._columns[pos]
                        self.refresh(
                            Region(
                                self._x[pos] - scroll_x,
                                row - top + self.header_height,
                                column.get_render_width(self),
                                1,
                            )
                        )
        return touched

    def release_held(self) -> None:
        """Offer the values low-bandwidth mode held back again (drawn once due)."""
        if self._held:
            self.update_values(dict(self._held))

    def reconcile(self, order: Sequence[str], values_of: Callable[[str], RowValues]) -> None:
        """Show exactly `order`, top to bottom.

        The VM under the cursor keeps the cursor and, when it stays shown, its line on
        the screen.
        """
        self._values_of = values_of
        cursor_vm = self.cursor_vm
        screen_line = self._cursor - int(self.scroll_y)
        wanted = list(order)
        if wanted != self._order:
            # A pass over the few drawn rows, not over all of `wanted` (10,000 at scale).
            self._order = wanted
            self._index = index = dict(zip(wanted, range(len(wanted)), strict=True))
            self._drawn = {k: v for k, v in self._drawn.items() if k in index}
            self._lines = {k: v for k, v in self._lines.items() if k in index}
            self._held = {k: v for k, v in self._held.items() if k in index}
            self._update_virtual_size()
            self.refresh()
        self._restore_cursor(cursor_vm, screen_line)
        self.fit_columns()  # a scrollbar may have come or gone with the rows

    def move_to(self, vm_id: str) -> bool:
        """Put the cursor on `vm_id` if it is shown."""
        index = self._index.get(vm_id)
        if index is None:
            return False
        self.move_cursor(row=index)
        return True

    def move_cursor(self, *, row: int, animate: bool = False, scroll: bool = True) -> None:
        """Cursor to `row` (clamped); scrolled into view unless `scroll` is False."""
        del animate  # nothing here animates
        row = max(0, min(row, len(self._order) - 1))
        old = self._cursor
        self._cursor = row
        if old != row:
            self._refresh_row(old)
            self._refresh_row(row)
        if scroll:
            self._scroll_to_cursor()
        vm = self.cursor_vm
        if old != row or vm != self._cursor_vm:
            self._cursor_vm = vm
            self.post_message(self.RowHighlighted(self, vm, row))

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_y)
        height = self._page_height()
        if height <= 0:
            return
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + height:
            self.scroll_to(y=self._cursor - height + 1, animate=False, immediate=True)

    def _refresh_row(self, row: int) -> None:
        if 0 <= row < len(self._order):
            self._lines.pop(self._order[row], None)
            y = row - int(self.scroll_y) + self.header_height
            if self.header_height <= y < self.size.height:
                self.refresh(Region(0, y, self.size.width, 1))

    def _restore_cursor(self, vm_id: str | None, screen_line: int) -> None:
        if vm_id is None or vm_id not in self._index:
            # The cursor's VM went: the same row, clamped (and told, for the cursor line).
            self.move_cursor(row=self._cursor, scroll=False)
            return
        index = self._index[vm_id]
        if index == self._cursor:
            if self._cursor_vm != vm_id:
                self.move_cursor(row=index, scroll=False)
            return
        self.move_cursor(row=index, scroll=False)
        self.scroll_to(y=max(0, index - max(0, screen_line)), animate=False, immediate=True)

    # -- keys and mouse ------------------------------------------------------------------

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self._cursor + 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self._cursor - 1)

    def action_page_down(self) -> None:
        height = self._page_height()
        self.scroll_to(y=int(self.scroll_y) + height, animate=False, immediate=True)
        self.move_cursor(row=self._cursor + height)

    def action_page_up(self) -> None:
        height = self._page_height()
        self.scroll_to(y=max(0, int(self.scroll_y) - height), animate=False, immediate=True)
        self.move_cursor(row=self._cursor - height)

    def action_scroll_top(self) -> None:
        self.move_cursor(row=0)

    def action_scroll_bottom(self) -> None:
        self.move_cursor(row=len(self._order) - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y < self.header_height:
            x = offset.x + int(self.scroll_x)
            for pos, column in enumerate(self._columns):
                if self._x[pos] <= x < self._x[pos] + column.get_render_width(self):
                    self.post_message(self.HeaderSelected(self, column.key))
                    return
            return
        self.move_cursor(row=int(self.scroll_y) + offset.y - self.header_height)

    # -- drawing -------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._lines.clear()
        self._cells.clear()
        self._styled.clear()
        self._header = None

    def notify_style_update(self) -> None:
        self._invalidate()
        super().notify_style_update()

    def _check_styles(self) -> Style:
        """Cached lines hold the widget's styles: drop them when those change (focus,
        theme). Returns the widget's Rich style."""
        style = self.rich_style
        key = (self.has_focus, style, self.palette, self.app.theme)
        if key != self._styles_key:
            self._styles_key = key
            self._invalidate()
        return style

    def render_lines(self, crop: Region) -> list[Strip]:
        """The lines in `crop`: the styles read once for all of them."""
        self._pass_style = self._check_styles()
        try:
            return super().render_lines(crop)
        finally:
            self._pass_style = None

    def render_line(self, y: int) -> Strip:
        style = self._pass_style  # checked for this pass already
        if style is None:
            style = self._check_styles()
        width = self.size.width
        scroll_x = int(self.scroll_x)
        if y < self.header_height:
            if self._header is None:
                self._header = self._render_header(style)
            strip = self._header
        else:
            row = int(self.scroll_y) + y - self.header_height
            if row >= len(self._order):
                return Strip.blank(width, style)
            strip = self._row_strip(row, style)
        if not scroll_x and strip.cell_length == width:
            return strip  # what crop_extend would return, without building it again
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _render_header(self, base: Style) -> Strip:
        style = base + self.get_component_rich_style("fleet-table--header")
        cells: list[tuple[Text, int, str, Hashable]] = [
            (c.label, c.width, COLUMNS[COLUMN_INDEX[c.key]].justify, None) for c in self._columns
        ]
        return self._render_cells(cells, style, None)

    def _row_strip(self, row: int, base: Style) -> Strip:
        vm_id = self._order[row]
        values = self._values(vm_id)
        cursor = row == self._cursor
        hit = self._lines.get(vm_id)
        if hit is not None and hit[0] is values and hit[1] is cursor:
            return hit[2]
        over: Style | None = None
        if cursor:
            cursor_style = self.get_component_rich_style("fleet-table--cursor")
            base = base + cursor_style
            # The cursor's colours win over the cells' (as DataTable's "css" priority).
            over = Style.from_color(cursor_style.color, cursor_style.bgcolor)
        # The line is its cells' styled segments one after the other, adjacent equal
        # styles joined (what `_render_cells` makes of them, cell by cell).
        palette = self.palette
        styled_cells = self._styled
        if len(styled_cells) > CELL_CACHE_SIZE:
            styled_cells.clear()
        segments: list[Segment] = []
        total = 0
        for index, column in zip(self._shown, self._columns, strict=True):
            value = values[index]
            width = column.width
            key = (index, value, width, base, over)
            styled = styled_cells.get(key)
            if styled is None:
                text = render_cell(index, value, palette)
                raw = self._cell_segments(text, width, COLUMNS[index].justify, (index, value))
                styled = styled_cells[key] = list(
                    Segment.simplify(Segment.apply_style(raw, base, over))
                )
            _append_simplified(segments, styled)
            total += width + 2 * self.cell_padding
        strip = Strip(segments, total)
        self._lines[vm_id] = (values, cursor, strip)
        return strip

    def _render_cells(
        self, cells: list[tuple[Text, int, str, Hashable]], base: Style, over: Style | None
    ) -> Strip:
        """One line: each cell cut or padded to its width, with padding either side.
        Cells are plain `Text` (guest strings were made plain by `render_cell`)."""
        segments: list[Segment] = []
        total = 0
        for text, width, justify, key in cells:
            segments.extend(self._cell_segments(text, width, justify, key))
            total += width + 2 * self.cell_padding
        # Adjacent equal styles joined (fewer escape sequences on the wire), one Strip.
        return Strip(list(Segment.simplify(Segment.apply_style(segments, base, over))), total)

    def _cell_segments(
        self, text: Text, width: int, justify: str, value: Hashable
    ) -> list[Segment]:
        """A cell's segments, padded to its width: kept per (column and value, width),
        since most cells of a fleet say the same things ("ok", "thawed", an OS name).
        `value` None: not kept (the header)."""
        key = (value, width)
        hit = self._cells.get(key) if value is not None else None
        if hit is not None:
            return hit
        pad = Segment(" " * self.cell_padding)
        if text.cell_len > width:
            text = text.copy()
            text.truncate(width, overflow="ellipsis")
        gap = width - text.cell_len
        out = [pad]
        if justify == "right" and gap:
            out.append(Segment(" " * gap))
        out.extend(_text_segments(text))
        if justify != "right" and gap:
            out.append(Segment(" " * gap))
        out.append(pad)
        if value is not None:
            if len(self._cells) > CELL_CACHE_SIZE:
                self._cells.clear()
            self._cells[key] = out
        return out


def _append_simplified(line: list[Segment], cell: list[Segment]) -> None:
    """`line` + `cell` as `Segment.simplify` would join them (both are simplified: only
    where they meet can two segments of equal style be next to each other)."""
    if line and cell and line[-1].style == cell[0].style:
        last = line[-1]
        line[-1] = Segment(last.text + cell[0].text, last.style)
        line.extend(cell[1:])
    else:
        line.extend(cell)


def _text_segments(text: Text) -> list[Segment]:
    """A one-line `Text` as segments, without a console (no wrapping, no markup)."""
    if not text.spans and isinstance(text.style, Style):
        return [Segment(text.plain, text.style)]
    return [seg for seg in text.render(_CONSOLE, end="") if seg.text and not seg.control]


# Only for resolving a `Text`'s spans into segments; it never writes anywhere.
_CONSOLE = Console(width=1000, color_system=None, markup=False, highlight=False, emoji=False)
