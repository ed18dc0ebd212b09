"""What the dashboard writes to its terminal (issue 18): a dashboard watched through SSH
must cost the link little. A tick that changes nothing on screen writes nothing; one
changed cell rewrites at most its own line; an idle dashboard stays under a byte budget.
"""

from __future__ import annotations

import os
import pty
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qgadash.fleet.model import AgentState
from qgadash.ui.app import QgadashApp

from .fakes import NOW, FakeClock, FakeEngine, big_fleet
from .screen import screen_text, wait_until

REPO = Path(__file__).resolve().parents[2]
SIZE = (200, 50)
_MOVE = re.compile(r"\x1b\[(\d+);(\d+)H")


class Written:
    """What each frame would write to a real terminal (Textual's own encoding of it)."""

    def __init__(self, app: QgadashApp) -> None:
        self.frames: list[str] = []
        display = app._display

        def record(screen: Any, renderable: Any) -> None:
            if renderable is not None:
                self.frames.append(renderable.render_segments(app.console))
            display(screen, renderable)

        app._display = record  # type: ignore[method-assign]

    @property
    def text(self) -> str:
        return "".join(self.frames)

    async def settled(self, pilot: Any) -> None:
        """Until a frame's time passes with nothing to write (the first paint and its
        aftermath, such as the scrollbar, are done)."""
        for _ in range(100):
            self.frames.clear()
            await pilot.pause()
            if not self.frames:
                return
        raise AssertionError("the screen never stopped changing")

    def lines(self) -> set[int]:
        """The screen lines (0-based) written to."""
        return {int(m.group(1)) - 1 for m in _MOVE.finditer(self.text)}


def fleet_app(n: int, clock: FakeClock) -> tuple[QgadashApp, FakeEngine]:
    engine = FakeEngine(big_fleet(n), clock=clock)
    return QgadashApp(engine, config_label="hosts.toml", clock=clock), engine


async def test_ticks_that_change_nothing_on_screen_write_nothing() -> None:
    """Every VM was polled a second ago; 3 s later (12 ticks) no cell says anything
    else, so nothing is written (ages move at a coarse step, not every second)."""
    clock = FakeClock(NOW)
    app, _ = fleet_app(300, clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(app.fleet.table.order) == 300)
        written = Written(app)
        await written.settled(pilot)
        for _ in range(12):
            clock.advance(0.25)
            app._tick()  # what the 4 Hz timer does
            await pilot.pause()
        assert written.text == ""


async def test_one_changed_cell_rewrites_at_most_its_line() -> None:
    clock = FakeClock(NOW)
    app, engine = fleet_app(300, clock)
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        await wait_until(pilot, lambda: len(table.order) == 300)
        await pilot.pause()
        # On screen, not under the cursor, answering (a timed-out row is all grey).
        agents = [getattr(engine.store.get(v), "agent", None) for v in table.order[:40]]
        row = next(i for i, agent in enumerate(agents) if i and agent is AgentState.OK)
        vm = table.order[row]
        snap = engine.store.get(vm)
        assert snap is not None
        written = Written(app)
        await written.settled(pilot)
        engine.store.update(vm, latency_ms=(snap.latency_ms or 0) + 7)
        await wait_until(pilot, lambda: table.get_cell(vm, "rtt").plain == "7.5ms")
        await pilot.pause()
        header_lines = table.region.y + 1  # screen lines above the first row
        assert written.lines() == {header_lines + row}
        # Not more than a line's worth: its text and a few style changes.
        assert 0 < len(written.text) <= 2 * SIZE[0] + 400


async def test_low_bandwidth_redraws_non_critical_columns_slowly() -> None:
    """RTT waits (30 s per row); a state change does not."""
    from qgadash.ui.preferences import DisplaySettings

    clock = FakeClock(NOW)
    engine = FakeEngine(big_fleet(50), clock=clock)
    app = QgadashApp(engine, clock=clock, display=DisplaySettings(low_bandwidth=True))
    async with app.run_test(size=SIZE) as pilot:
        table = app.fleet.table
        await wait_until(pilot, lambda: len(table.order) == 50)
        assert "low-bandwidth" in screen_text(app).splitlines()[0]
        vm = table.order[3]
        engine.store.update(vm, latency_ms=1.5)  # drawn: the row's first slow change
        await wait_until(pilot, lambda: table.get_cell(vm, "rtt").plain == "1.5ms")
        engine.store.update(vm, latency_ms=2.5)  # within 30 s of it: waits
        engine.store.update(table.order[4], agent=AgentState.UNREACHABLE)
        await wait_until(
            pilot, lambda: table.get_cell(table.order[4], "agent").plain == "unreachable"
        )
        app._tick()
        await pilot.pause()
        assert table.get_cell(vm, "rtt").plain == "1.5ms"
        table.slow_seconds = 0.001  # as if 30 s went by
        await wait_until(pilot, lambda: table.get_cell(vm, "rtt").plain == "2.5ms")


def test_an_idle_dashboard_writes_little_to_its_terminal() -> None:
    """`qgadash --demo 24` on a 200x50 pty for 10 s after its first frame and the first
    polls' facts are drawn: the budget
    (150 KB) is generous (about 20 KB are written: rows whose RTT changed as they are
    polled every 5 s); a table repainted on every change wrote about 1.5 MB."""
    master, slave = pty.openpty()
    import fcntl
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor", PYTHONPATH=str(REPO))
    env.pop("NO_COLOR", None)
    env.pop("TEXTUAL_COLOR_SYSTEM", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qgadash", "--demo", "24"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[tuple[float, bytes]] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append((time.monotonic(), data))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        give_up = time.monotonic() + 60
        while b"24 VMs" not in b"".join(c for _, c in chunks):
            assert proc.poll() is None, b"".join(c for _, c in chunks)[-2000:]
            assert time.monotonic() < give_up, "no first frame within 60 s"
            time.sleep(0.1)
        # The first polls fill every row (OS, host, addresses): on a loaded machine they
        # land after the first frame. Measure once that wave is drawn: a second with
        # under 30 KB written (a dashboard that repaints whole rows never gets there).
        while True:
            now = time.monotonic()
            recent = sum(len(c) for t, c in chunks if t >= now - 1.0)
            if recent < 30_000 and now - chunks[0][0] > 1.0:
                break
            assert proc.poll() is None
            assert now < give_up, f"still writing {recent} bytes a second after 60 s"
            time.sleep(0.2)
        start = time.monotonic()
        while time.monotonic() - start < 10:
            assert proc.poll() is None
            time.sleep(0.2)
        end = time.monotonic()
        written = sum(len(c) for t, c in chunks if start <= t < end)
        assert written < 150_000, f"{written} bytes in 10 s"
    finally:
        if proc.poll() is None:
            os.write(master, b"\x11")  # Ctrl-Q: quits (nothing frozen by us)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        os.close(master)
        reader.join(timeout=5)
