"""What a long command shows on stderr while it runs, when stderr is a terminal: a bar
for bulk actions and transfers, a live countdown while a freeze is held. Nothing at all
when stderr is a pipe or a file (scripts get the results, not the animation)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from qgadash.fleet.model import ActionResult

__all__ = ["ActionBar", "Countdown", "plural", "stderr_is_terminal", "transfer_bar"]

COUNTDOWN_TICK = 1.0  # seconds between two redraws of the freeze countdown


def plural(n: int, word: str = "VM") -> str:
    """`1 VM`, `3 VMs`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _console() -> Console:
    return Console(stderr=True, highlight=False)


class ActionBar:
    """`with ActionBar("freeze", 12) as bar: await engine.freeze(..., progress=bar)`:
    one step per VM's result, with counts of what failed; erased when done."""

    def __init__(self, what: str, total: int, *, enabled: bool | None = None) -> None:
        self._enabled = stderr_is_terminal() if enabled is None else enabled
        self._what = what
        self._total = total
        self._failed = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ActionBar:
        if self._enabled and self._total > 0:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"),
                TimeElapsedColumn(),
                console=_console(),
                transient=True,
            )
            self._task = self._progress.add_task(
                f"{self._what} {plural(self._total)}", total=self._total, failed=""
            )
            self._progress.start()
        return self

    def __call__(self, result: ActionResult) -> None:
        if self._progress is None or self._task is None:
            return
        if not result.ok:
            self._failed += 1
        failed = f"{self._failed} failed" if self._failed else ""
        self._progress.update(self._task, advance=1, failed=failed)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            with contextlib.suppress(OSError, ValueError):  # the terminal may be gone
                self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def transfer_bar(
    what: str, *, enabled: bool | None = None
) -> Iterator[Callable[[int, int | None], None]]:
    """A byte progress bar for one copy; yields the callback the transfer calls with
    (bytes done, total or None)."""
    if not (stderr_is_terminal() if enabled is None else enabled):
        yield lambda _done, _total: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=_console(),
        transient=True,
    )
    task = progress.add_task(what, total=None)

    def advance(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    progress.start()
    try:
        yield advance
    finally:
        with contextlib.suppress(OSError, ValueError):
            progress.stop()


class Countdown:
    """While a freeze is held in the foreground: `❄ 3 VMs frozen · thaw in 0:41`, redrawn
    every second from `remaining()` (seconds to the nearest deadline; None: none)."""

    def __init__(
        self,
        frozen: Callable[[], int],
        remaining: Callable[[], float | None],
        *,
        enabled: bool | None = None,
    ) -> None:
        self._enabled = stderr_is_terminal() if enabled is None else enabled
        self._frozen = frozen
        self._remaining = remaining
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    def text(self) -> Text:
        left = self._remaining()
        line = Text(f"❄ {plural(self._frozen())} frozen", style="bold cyan")
        if left is not None:
            seconds = int(max(0.0, left) + 0.999)
            line.append(f" · thaw in {seconds // 60}:{seconds % 60:02d}", style="cyan")
        line.append("  (Ctrl-C thaws now)", style="dim")
        return line

    async def __aenter__(self) -> Countdown:
        if self._enabled:
            self._live = Live(self.text(), console=_console(), auto_refresh=False, transient=True)
            self._live.start(refresh=True)
            self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def _tick(self) -> None:
        while self._live is not None:
            await asyncio.sleep(COUNTDOWN_TICK)
            with contextlib.suppress(OSError, ValueError):
                self._live.update(self.text(), refresh=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        live, self._live = self._live, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if live is not None:
            with contextlib.suppress(OSError, ValueError):
                live.stop()
