"""Signals end qgadash by thawing first, and a second signal does not cut the thaw short.

The operator's terminal closing (SIGHUP), `kill` (SIGTERM), Ctrl-C (SIGINT) and Ctrl-\\
(SIGQUIT) all mean "stop now"; each of them, left to Python's defaults, would end the
process with guests still frozen (SIGINT through KeyboardInterrupt at any await, the
others at once). `SignalWatch` turns the first one into a call the CLI or the dashboard
answers by stopping the engine, which thaws; every later one only says "thawing N VMs,
please wait", since the thaw must finish. SIGKILL cannot be caught: the keepers and the
journal (`fleet/keeping.py`) cover it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from contextvars import ContextVar

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_installed_watch: ContextVar[SignalWatch | None] = ContextVar("signal_watch", default=None)


def received_stop_signal() -> signal.Signals | None:
    """The stop signal that is ending this task's command, if one is: for a command that
    the signal only cancels and that must pass it on (`qgadash serve` tells each browser
    session's dashboard, which thaws and audits as it would on that signal)."""
    watch = _installed_watch.get()
    return watch.received if watch is not None else None


def say(message: str) -> None:
    """One line to stderr, if there still is one: after SIGHUP the terminal is gone."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


class SignalWatch:
    """Install on the running loop; `received` is the first stop signal, if any."""

    def __init__(self, on_stop: Callable[[signal.Signals], None], owed: Callable[[], int]) -> None:
        self._on_stop = on_stop
        self._owed = owed
        self.received: signal.Signals | None = None
        self._stopping = False
        self._installed: list[signal.Signals] = []
        # SIGPIPE is ignored by Python; writes to a closed terminal raise instead (`say`).

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._handle, sig)
                self._installed.append(sig)
        _installed_watch.set(self)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        self._installed.clear()
        if _installed_watch.get() is self:
            _installed_watch.set(None)

    @property
    def reason(self) -> str:
        """How the audit log names thaws done because of the signal."""
        return f"signal {self.received.name}" if self.received is not None else "quit"

    def stopping(self) -> None:
        """The thaw has begun: from now on no signal interrupts anything."""
        self._stopping = True

    def _handle(self, sig: signal.Signals) -> None:
        log.warning("%s received (stopping: %s)", sig.name, self._stopping or self.received)
        if self.received is None:
            self.received = sig
            if not self._stopping:
                self._on_stop(sig)
                return
        owed = self._owed()
        if owed:
            say(f"qgadash: {sig.name}: thawing {owed} VMs, please wait")
