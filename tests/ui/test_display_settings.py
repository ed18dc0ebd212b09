"""Display settings (issue 18): dashboard.json's frame_rate, colors and low_bandwidth,
the --low-bandwidth and --colors flags; a bad value is a message naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qgadash.cli.parser import build_parser
from qgadash.ui.preferences import DisplaySettings, apply_colors, load_display


def test_no_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_display(tmp_path / "dashboard.json") == DisplaySettings()


def test_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps({"frame_rate": 2, "colors": "16", "low_bandwidth": True}))
    assert load_display(path) == DisplaySettings(2, "16", True)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"frame_rate": 0}, "frame_rate"),
        ({"frame_rate": "fast"}, "frame_rate"),
        ({"frame_rate": True}, "frame_rate"),
        ({"colors": "millions"}, "colors"),
        ({"low_bandwidth": "yes"}, "low_bandwidth"),
        ({"columns": ["cpu", "memory"]}, "columns"),
        ({"columns": "cpu"}, "columns"),
    ],
)
def test_a_bad_value_is_ignored_with_a_message_naming_file_and_key(
    tmp_path: Path, data: dict[str, object], key: str
) -> None:
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(data))
    display = load_display(path)
    assert len(display.errors) == 1
    assert str(path) in display.errors[0] and f"'{key}'" in display.errors[0]
    assert dataclass_values(display) == dataclass_values(DisplaySettings())


def dataclass_values(d: DisplaySettings) -> tuple[int, str, bool, tuple[str, ...]]:
    return d.frame_rate, d.colors, d.low_bandwidth, d.columns


def test_optional_columns_are_read_and_saved_beside_the_rest(tmp_path: Path) -> None:
    from qgadash.ui.fleet_view import OPTIONAL_COLUMNS
    from qgadash.ui.preferences import OPTIONAL_COLUMN_KEYS, save_columns, save_theme

    assert OPTIONAL_COLUMN_KEYS == OPTIONAL_COLUMNS  # written out twice: must agree
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps({"frame_rate": 2, "columns": ["io", "cpu", "io"]}))
    assert load_display(path).columns == ("io", "cpu")
    assert save_columns(["cpu"], path) is None and save_theme("x", path) is None
    assert json.loads(path.read_text()) == {"frame_rate": 2, "columns": ["cpu"], "theme": "x"}


def test_forced_colours_become_textuals_colour_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    apply_colors("auto")
    import os

    assert "TEXTUAL_COLOR_SYSTEM" not in os.environ
    apply_colors("16")
    assert os.environ["TEXTUAL_COLOR_SYSTEM"] == "standard"


def test_flags() -> None:
    args = build_parser().parse_args(["--low-bandwidth", "--colors", "256"])
    assert args.low_bandwidth and args.colors == "256"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--colors", "lots"])
