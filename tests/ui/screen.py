"""Reading what a running app shows, as plain text, for assertions."""

from __future__ import annotations

from typing import Any


def screen_text(app: Any) -> str:
    """Every line of the current screen (modals included) as plain text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)
