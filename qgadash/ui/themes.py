"""Themes as TOML files, turned into `textual.theme.Theme` objects.

Shipped themes live beside this module (`qgadash/ui/themes/*.toml`); users add or
override themes in `$XDG_CONFIG_HOME/qgadash/themes/*.toml` with the same format:

    name = "my-theme"
    dark = true
    primary = "#4C9BE8"          # and secondary, accent, success, warning, error,
                                 # foreground, background, surface, panel, boost
    [variables]
    frozen = "#7FD4F5"           # our own: frozen guests
    stale = "#6B7683"            # our own: values from an earlier poll

A theme that does not set `frozen` or `stale` gets them from `THEME_VARIABLE_DEFAULTS`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from rich.style import Style
from textual.color import Color, ColorParseError
from textual.theme import Theme

from qgadash.ui.fleet_view import Palette

__all__ = [
    "DEFAULT_THEME",
    "SHIPPED_THEME_DIR",
    "THEME_VARIABLE_DEFAULTS",
    "ThemeError",
    "available_theme_names",
    "load_theme_file",
    "load_themes",
    "palette_from_variables",
    "user_theme_dir",
]

DEFAULT_THEME = "qgadash-dark"
SHIPPED_THEME_DIR = Path(__file__).with_name("themes")
THEME_VARIABLE_DEFAULTS = {"frozen": "#7FD4F5", "stale": "#808080"}

_COLOR_KEYS = (
    "primary",
    "secondary",
    "accent",
    "success",
    "warning",
    "error",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_NUMBER_KEYS = ("luminosity_spread", "text_alpha")
_ALLOWED = {"name", "dark", "variables", *_COLOR_KEYS, *_NUMBER_KEYS}


class ThemeError(Exception):
    """A theme file that cannot be used; the message names the file and the key."""


def user_theme_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qgadash" / "themes"


def _color(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ThemeError(f"{path}: {key}: found {value!r}, expected a colour string like '#4C9BE8'")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeError(
            f"{path}: {key}: found {value!r}, expected a colour like '#4C9BE8'"
        ) from None
    return value


def load_theme_file(path: Path) -> Theme:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"{path}: invalid TOML ({exc})") from None
    for key in doc:
        if key not in _ALLOWED:
            raise ThemeError(
                f"{path}: unknown key {key!r}; expected one of {', '.join(sorted(_ALLOWED))}"
            )
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ThemeError(f"{path}: name: found {name!r}, expected a non-empty string")
    if "primary" not in doc:
        raise ThemeError(f"{path}: primary: missing, expected a colour like '#4C9BE8'")
    colors = {key: _color(path, key, doc[key]) for key in _COLOR_KEYS if key in doc}
    dark = doc.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeError(f"{path}: dark: found {dark!r}, expected true or false")
    numbers: dict[str, float] = {}
    for key in _NUMBER_KEYS:
        if key in doc:
            value = doc[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ThemeError(f"{path}: {key}: found {value!r}, expected a number from 0 to 1")
            numbers[key] = float(value)
    raw_vars = doc.get("variables", {})
    if not isinstance(raw_vars, dict) or not all(isinstance(v, str) for v in raw_vars.values()):
        raise ThemeError(f'{path}: variables: expected a table of name = "value" strings')
    variables = {**THEME_VARIABLE_DEFAULTS, **raw_vars}
    for key in ("frozen", "stale"):
        _color(path, f"variables.{key}", variables[key])
    theme = Theme(name=name, primary=colors.pop("primary"), dark=dark, variables=variables)
    for key, value in colors.items():
        setattr(theme, key, value)
    for key, number in numbers.items():
        setattr(theme, key, number)
    return theme


def load_themes(user_dir: Path | None = None) -> tuple[dict[str, Theme], list[str]]:
    """Shipped themes, then the user's (which win on equal names); plus the errors found."""
    themes: dict[str, Theme] = {}
    errors: list[str] = []
    folders = [SHIPPED_THEME_DIR, user_dir if user_dir is not None else user_theme_dir()]
    for folder in folders:
        try:
            files = sorted(folder.glob("*.toml"))
        except OSError:
            continue
        for path in files:
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                errors.append(str(exc))
                continue
            themes[theme.name] = theme
    return themes, errors


def available_theme_names(user_dir: Path | None = None) -> list[str]:
    """Names `--theme` accepts: shipped themes and the user's (for the CLI's checks and help)."""
    themes, _ = load_themes(user_dir)
    return sorted(themes)


def palette_from_variables(variables: dict[str, str]) -> Palette:
    """The table's state styles from the active theme's CSS variables."""

    def style(name: str, fallback: Style, **extra: Any) -> Style:
        raw = variables.get(name)
        if not raw:
            return fallback
        try:
            color = Color.parse(raw)
        except ColorParseError:
            return fallback
        return Style(color=color.rich_color, **extra)

    base = Palette()
    return Palette(
        ok=style("success", base.ok),
        warning=style("warning", base.warning),
        error=style("error", base.error),
        frozen=style("frozen", base.frozen),
        stale=style("stale", base.stale),
        accent=style("accent", base.accent),
        mark=style("accent", base.mark, bold=True),
    )
