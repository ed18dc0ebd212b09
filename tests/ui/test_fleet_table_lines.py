"""A row line built from cached styled cells is the line `_render_cells` makes of the
same cells in one pass (same segments, so the same bytes on the terminal)."""

from __future__ import annotations

from collections.abc import Hashable

from rich.style import Style
from rich.text import Text

from qgadash.ui.app import QgadashApp
from qgadash.ui.fleet_view import COLUMNS, render_cell
from tests.ui.fakes import NOW, FakeClock, FakeEngine, mixed_fleet


async def test_row_lines_from_cached_cells_equal_the_one_pass_line() -> None:
    snaps, hvs = mixed_fleet(40)
    clock = FakeClock(NOW)
    app = QgadashApp(FakeEngine(snaps, hvs, clock=clock), clock=clock)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        table = app.fleet.table
        base = table.rich_style
        cursor_style = table.get_component_rich_style("fleet-table--cursor")
        for row in range(table.row_count):
            for cursor in (True, False):
                table._cursor = row if cursor else -1
                table._lines.clear()
                line = table._row_strip(row, base)  # cells cached from earlier rows
                values = table._values(table.order[row])
                cells: list[tuple[Text, int, str, Hashable]] = [
                    (render_cell(i, values[i], table.palette), c.width, COLUMNS[i].justify, None)
                    for i, c in zip(table._shown, table._columns, strict=True)
                ]
                if cursor:
                    over = Style.from_color(cursor_style.color, cursor_style.bgcolor)
                    expected = table._render_cells(cells, base + cursor_style, over)
                else:
                    expected = table._render_cells(cells, base, None)
                assert list(line) == list(expected)
                assert line.cell_length == expected.cell_length
