"""What the dashboard remembers between runs: the theme last chosen in it, and how it
draws on the terminal (`DisplaySettings`).

Kept in `$XDG_CONFIG_HOME/qgadash/dashboard.json` (never in hosts.toml, which is the
operator's file). A missing or unreadable file is no preference, never an error; a
display setting of the wrong type or range is ignored with a message naming the file
and the key.

    {"theme": "qgadash-dark", "frame_rate": 5, "colors": "256", "low_bandwidth": true,
     "columns": ["cpu", "io"]}

No Textual here: the colour setting must be applied before Textual is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COLOR_CHOICES",
    "DisplaySettings",
    "apply_colors",
    "load_display",
    "load_theme",
    "preferences_path",
    "save_columns",
    "save_theme",
]

# The `colors` setting (and --colors) -> Textual's TEXTUAL_COLOR_SYSTEM. "auto": what
# TERM and COLORTERM say (Rich's detection); NO_COLOR in the environment wins over all.
COLOR_CHOICES = {"auto": "auto", "truecolor": "truecolor", "256": "256", "16": "standard"}
FRAME_RATE_RANGE = (1, 30)
# The fleet table's optional columns (ui/fleet_view.py: CPU %, DISK I/O). Written out
# here: this module is read before anything that draws is imported.
OPTIONAL_COLUMN_KEYS = ("cpu", "io")


@dataclass(frozen=True, slots=True)
class DisplaySettings:
    """How the dashboard draws: what it costs the terminal link.

    `frame_rate`: data-driven frames a second at most (store changes are gathered that
    long; key presses are drawn at once, whatever it is). `colors`: see COLOR_CHOICES.
    `low_bandwidth`: the non-critical columns (FULL, LOAD, RTT, SEEN) redrawn at most
    every LOW_BANDWIDTH_SECONDS per row, no sparklines, said in the header.
    `columns`: the optional fleet columns shown (OPTIONAL_COLUMN_KEYS); each costs a
    request on every poll of every VM while shown.
    """

    frame_rate: int = 5
    colors: str = "auto"
    low_bandwidth: bool = False
    columns: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # one per bad key; the dashboard shows them once up


def load_display(path: Path | None = None) -> DisplaySettings:
    """The display settings from dashboard.json (bad keys: defaults, and `errors`)."""
    path = path or preferences_path()
    data = _load(path)
    errors: list[str] = []
    defaults = DisplaySettings()
    rate = data.get("frame_rate", defaults.frame_rate)
    low, high = FRAME_RATE_RANGE
    if isinstance(rate, bool) or not isinstance(rate, int) or not low <= rate <= high:
        errors.append(
            f"{path}: key 'frame_rate': want a whole number {low}..{high};"
            f" using {defaults.frame_rate}"
        )
        rate = defaults.frame_rate
    colors = data.get("colors", defaults.colors)
    if not isinstance(colors, str) or colors not in COLOR_CHOICES:
        choices = ", ".join(COLOR_CHOICES)
        errors.append(f"{path}: key 'colors': want one of {choices}; using auto")
        colors = defaults.colors
    low_bw = data.get("low_bandwidth", defaults.low_bandwidth)
    if not isinstance(low_bw, bool):
        errors.append(f"{path}: key 'low_bandwidth': want true or false; using false")
        low_bw = defaults.low_bandwidth
    columns = data.get("columns", [])
    if not isinstance(columns, list) or not all(c in OPTIONAL_COLUMN_KEYS for c in columns):
        choices = ", ".join(f'"{k}"' for k in OPTIONAL_COLUMN_KEYS)
        errors.append(f"{path}: key 'columns': want a list of {choices}; showing none")
        columns = []
    return DisplaySettings(rate, colors, low_bw, tuple(dict.fromkeys(columns)), tuple(errors))


def apply_colors(colors: str) -> None:
    """Force the colour depth (before Textual is imported: it reads the environment
    once). "auto" leaves TERM/COLORTERM detection alone; an explicit
    TEXTUAL_COLOR_SYSTEM in the environment is left as it is."""
    system = COLOR_CHOICES.get(colors, "auto")
    if system != "auto":
        os.environ.setdefault("TEXTUAL_COLOR_SYSTEM", system)


def preferences_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qgadash" / "dashboard.json"


def _load(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_theme(path: Path | None = None) -> str | None:
    theme = _load(path or preferences_path()).get("theme")
    return theme if isinstance(theme, str) and theme else None


def save_theme(theme: str, path: Path | None = None) -> str | None:
    """Remember `theme`; None when saved, else why not (one line)."""
    return _save("theme", theme, path)


def save_columns(columns: list[str], path: Path | None = None) -> str | None:
    """Remember which optional columns are shown; None when saved, else why not."""
    return _save("columns", columns, path)


def _save(key: str, value: object, path: Path | None) -> str | None:
    path = path or preferences_path()
    data = _load(path)
    if data.get(key) == value:
        return None
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".tmp").unlink()
        return f"{path}: {exc.strerror or exc}"
    return None
