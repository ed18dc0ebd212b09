"""SignalWatch on its own: the first stop signal stops, later ones only say "please wait",
and the handlers are installed on the loop and removed again."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest

from qgadash.fleet.signals import STOP_SIGNALS, SignalWatch, received_stop_signal, say


@pytest.fixture
def python_handlers() -> Iterator[list[int]]:
    """Stop signals that reach Python's handlers (not the loop's): recorded, not fatal."""
    seen: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda number, frame: seen.append(number))
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_the_stop_signals_are_int_term_hup_and_quit() -> None:
    assert set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


async def test_each_stop_signal_reaches_the_watch_once_installed_and_none_after_removal(
    python_handlers: list[int],
) -> None:
    for sig in STOP_SIGNALS:
        stops: list[signal.Signals] = []
        watch = SignalWatch(stops.append, lambda: 0)
        watch.install()
        os.kill(os.getpid(), sig)
        await asyncio.sleep(0.05)
        assert stops == [sig] and watch.received is sig
        assert watch.reason == f"signal {sig.name}"
        watch.remove()
        signal.signal(sig, lambda number, frame: python_handlers.append(number))
        os.kill(os.getpid(), sig)
        await asyncio.sleep(0.05)
        assert stops == [sig]  # removed: the loop no longer answers it
    assert python_handlers == list(STOP_SIGNALS)


async def test_later_signals_only_say_please_wait_while_vms_are_owed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    stops: list[signal.Signals] = []
    owed = [3]
    watch = SignalWatch(stops.append, lambda: owed[0])
    with caplog.at_level("WARNING", logger="qgadash.fleet.signals"):
        watch._handle(signal.SIGTERM)
        watch._handle(signal.SIGINT)
        watch.stopping()
        watch._handle(signal.SIGHUP)
        owed[0] = 0
        watch._handle(signal.SIGQUIT)
    # The log says each signal and what the process was doing when it came.
    assert [r.getMessage() for r in caplog.records] == [
        "SIGTERM received (stopping: None)",
        "SIGINT received (stopping: %s)" % signal.SIGTERM,  # noqa: UP031 (as logging does)
        "SIGHUP received (stopping: True)",
        "SIGQUIT received (stopping: True)",
    ]
    assert stops == [signal.SIGTERM]
    assert watch.received is signal.SIGTERM and watch.reason == "signal SIGTERM"
    assert capsys.readouterr().err.splitlines() == [
        "qgadash: SIGINT: thawing 3 VMs, please wait",
        "qgadash: SIGHUP: thawing 3 VMs, please wait",
    ]


def test_a_signal_once_the_thaw_has_begun_stops_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stops: list[signal.Signals] = []
    watch = SignalWatch(stops.append, lambda: 2)
    assert watch.reason == "quit"
    watch.stopping()
    watch._handle(signal.SIGTERM)
    assert stops == []
    assert watch.received is signal.SIGTERM and watch.reason == "signal SIGTERM"
    assert capsys.readouterr().err == "qgadash: SIGTERM: thawing 2 VMs, please wait\n"


def test_say_survives_a_closed_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone:
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

        def flush(self) -> None:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sys, "stderr", Gone())
    say("thawing")  # no exception: after SIGHUP the terminal is gone


def test_say_writes_one_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    say("qgadash: hello")
    assert capsys.readouterr() == ("", "qgadash: hello\n")


def test_say_survives_a_stderr_already_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    say("thawing")  # ValueError (I/O on a closed file) is swallowed, not raised


def test_say_flushes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr may be a block-buffered pipe (a log collector, `2>file`): a line about a
    thaw must be out before the process can die, not in a buffer."""
    calls: list[str] = []

    class Stream:
        def write(self, text: str) -> int:
            calls.append("write")
            return len(text)

        def flush(self) -> None:
            calls.append("flush")

    monkeypatch.setattr(sys, "stderr", Stream())
    say("qgadash: thawing 3 VMs before exit…")
    assert calls[-1] == "flush" and "write" in calls


def test_a_watch_on_a_loop_outside_the_main_thread_installs_nothing_and_raises_nothing() -> None:
    """Only the main thread may handle signals (a dashboard worker, an embedding app): the
    watch then stays quiet instead of failing the command."""
    outcome: list[object] = []

    async def watch_here() -> None:
        watch = SignalWatch(lambda sig: None, lambda: 0)
        watch.install()
        outcome.append(watch.received)
        watch.remove()

    def run() -> None:
        try:
            asyncio.run(watch_here())
        except BaseException as exc:  # the assertion below names it
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert outcome == [None]


@pytest.mark.parametrize("error", [NotImplementedError, RuntimeError, ValueError])
async def test_a_loop_that_refuses_signal_handlers_leaves_the_watch_quiet(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """NotImplementedError: Windows' loops; RuntimeError/ValueError: not the main thread,
    a closed loop, a signal number the platform lacks. None of them may fail a command."""
    loop = asyncio.get_running_loop()
    watch = SignalWatch(lambda sig: None, lambda: 0)

    def refuse(*args: object) -> None:
        raise error("no signal handlers here")

    monkeypatch.setattr(loop, "add_signal_handler", refuse)
    watch.install()  # does not raise
    monkeypatch.undo()
    watch.install()  # installed for real this time
    monkeypatch.setattr(loop, "remove_signal_handler", refuse)
    watch.remove()  # does not raise either
    monkeypatch.undo()
    for sig in STOP_SIGNALS:
        loop.remove_signal_handler(sig)


async def test_a_command_learns_which_stop_signal_is_ending_it(
    python_handlers: list[int],
) -> None:
    """What `qgadash serve` passes on to its sessions: the signal of the watch installed
    by this task (run_command's), none before it arrives or after the watch is removed."""
    watch = SignalWatch(lambda _sig: None, lambda: 0)
    watch.install()
    try:
        assert received_stop_signal() is None
        os.kill(os.getpid(), signal.SIGHUP)
        while watch.received is None:
            await asyncio.sleep(0.01)
        assert received_stop_signal() is signal.SIGHUP
    finally:
        watch.remove()
    assert received_stop_signal() is None
