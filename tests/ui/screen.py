"""Reading what a running app shows, as plain text, for assertions."""

from __future__ import annotations

from typing import Any


def screen_text(app: Any) -> str:
    """Every line of the current screen (modals included) as plain text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def wait_until(pilot: Any, condition: Any, timeout: float = 10.0) -> None:
    """Let the app run until `condition()` holds (timers fire late on a busy machine)."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            shown = screen_text(pilot.app)
            raise AssertionError(f"condition not met in time; the screen:\n{shown}")
        await pilot.pause(0.05)
