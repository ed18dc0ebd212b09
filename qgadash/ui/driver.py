"""A terminal driver that survives its terminal going away.

When the operator's terminal closes (the SSH window, `tmux kill-session`) the kernel
sends SIGHUP and every write to the terminal fails from then on. Textual's LinuxDriver
writes through a background thread: the first failed write kills that thread, its
30-slot queue fills, and the next write blocks the event loop for good — with guests
still to thaw. This driver drops output once the terminal is gone or its writer thread
has died, so the loop keeps running and the thaw finishes.

It reaches one private attribute of LinuxDriver (`_writer_thread`, the thread above);
the Textual version is pinned in pyproject.toml and a test closes a real terminal under
a running dashboard (tests/ui/test_dashboard_signals.py).
"""

from __future__ import annotations

import contextlib
import os

from textual.drivers.linux_driver import LinuxDriver


class TerminalSafeDriver(LinuxDriver):
    terminal_gone = False  # one terminal per process: class-wide

    def write(self, data: str) -> None:
        thread = self._writer_thread
        if TerminalSafeDriver.terminal_gone or thread is None or not thread.is_alive():
            return
        super().write(data)

    def close(self) -> None:
        thread = self._writer_thread
        if thread is not None and not thread.is_alive():
            self._writer_thread = None  # its queue may be full: stopping it would block
        super().close()


def terminal_gone() -> None:
    """The terminal is gone (SIGHUP): stop drawing, and point stdin, stdout and stderr
    at /dev/null so that any later write (ours, a library's) succeeds into nothing."""
    TerminalSafeDriver.terminal_gone = True
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
