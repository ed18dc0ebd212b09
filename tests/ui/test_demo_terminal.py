"""`qgadash --demo` in a real terminal (tmux): it draws, reacts to keys and quits cleanly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

REPO = Path(__file__).resolve().parents[2]


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        """Send keys. Wait for what the previous ones did first: a key sent while the
        dashboard still handles the one before may go to the widget focused before it."""
        self.run("send-keys", "-t", self.name, *keys)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(
                    f"not within {timeout:g} s: {what}; the screen:\n{self.screen()}"
                )
            time.sleep(0.1)

    def cursor_in_line_with(self, text: str) -> bool:
        """The terminal's cursor is on the line showing `text` (Textual puts it in the
        focused input)."""
        row = int(self.run("display-message", "-p", "-t", self.name, "#{cursor_y}"))
        lines = self.screen().splitlines()
        return row < len(lines) and text in lines[row]

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear; the screen was:\n{screen}")

    def wait_gone(self, text: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        screen = self.screen()
        while text in screen:
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} stayed; the screen was:\n{screen}")
            time.sleep(0.2)
            screen = self.screen()
        return screen

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "has-session", "-t", self.name], capture_output=True, timeout=10
            ).returncode
            == 0
        )


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    name = f"qgadash-test-{uuid.uuid4().hex[:8]}"
    status = tmp_path / "status"
    env = {
        "TERM": "xterm-256color",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYTHONPATH": str(REPO),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": os.environ.get("PATH", ""),
    }
    exports = " ".join(f"{k}={v!s}" for k, v in env.items())
    command = (
        f"cd {tmp_path} && env -i {exports} {sys.executable} -m qgadash --demo 24; "
        f"echo $? > {status}; sleep 30"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-x", "200", "-y", "50", "-s", name, command],
        check=True,
        timeout=10,
    )
    session = Tmux(name)
    session.status_file = status  # type: ignore[attr-defined]
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10)


def test_demo_draws_reacts_to_keys_and_quits(tmux: Tmux) -> None:
    screen = tmux.wait_for("24 VMs")
    tmux.wait_for("demo/db-01")
    assert "● " in screen and "ok" in screen
    tmux.keys("/")
    tmux.wait(lambda: tmux.cursor_in_line_with("filter:"), "the filter focused")
    tmux.keys("-l", "db-0")
    tmux.wait_for("filter: db-0")
    tmux.keys("Enter")
    screen = tmux.wait_for("2 shown")
    assert "demo/db-01" in screen and "demo/app-02" not in screen
    tmux.wait_for("space Mark")  # the table's keys in the footer: it has the focus again
    tmux.keys("Escape")  # no marks to clear, so esc clears the filter
    tmux.wait_for("24 shown")
    tmux.wait_for("demo/app-02")
    tmux.keys("?")
    tmux.wait_for("Keys")
    tmux.keys("Escape")
    tmux.wait_gone("Keys")
    assert "Cancel" not in tmux.screen()
    tmux.keys("p")
    screen = tmux.wait_for("Cancel")  # the dialog's button ("Power" is in the footer too)
    assert "Applies to" in screen
    tmux.keys("Enter")  # Cancel has the focus: nothing happens
    screen = tmux.wait_gone("Cancel")
    # No action started: its progress dialog says "Hide (keeps running)", then "Close".
    assert "Hide (keeps running)" not in screen and "Close" not in screen, screen
    tmux.keys("q")
    status: Path = tmux.status_file  # type: ignore[attr-defined]
    end = time.monotonic() + 20
    while not status.exists() and time.monotonic() < end:
        time.sleep(0.2)
    assert status.exists(), tmux.screen()
    assert status.read_text().strip() == "0"
