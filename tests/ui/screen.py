"""Reading what a running app shows, as plain text, for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.pilot import Pilot


def screen_text(app: App[Any]) -> str:
    """Every line of the current screen (modals included) as plain text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 10.0
) -> None:
    """Let the app run until `condition()` holds (timers fire late on a busy machine)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            shown = screen_text(pilot.app)
            raise AssertionError(f"condition not met in time; the screen:\n{shown}")
        await pilot.pause(0.05)
