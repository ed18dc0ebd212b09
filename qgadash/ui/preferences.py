"""What the dashboard remembers between runs: the theme last chosen in it.

Kept in `$XDG_CONFIG_HOME/qgadash/dashboard.json` (never in hosts.toml, which is the
operator's file). A missing or unreadable file is no preference, never an error.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

__all__ = ["load_theme", "preferences_path", "save_theme"]


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
    path = path or preferences_path()
    data = _load(path)
    if data.get("theme") == theme:
        return None
    data["theme"] = theme
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
