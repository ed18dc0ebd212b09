"""A simulated fleet and qgadash itself as real processes, for tests of the front ends
that run as servers (`qgadash metrics`, `qgadash serve`).

    with SimProcess(tmp, count=12, faults={"frozen": 3, "silent": 1}) as sim:
        with QgadashProcess(["--hosts", str(sim.hosts), "metrics", "--listen", addr]) as q:
            ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from qgadash.sim.fleet import assign_faults
from qgadash.sim.profiles import Fault

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, seconds: float, process: subprocess.Popen[str] | None = None) -> None:
    give_up = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) before listening")
        if time.monotonic() > give_up:
            raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s")
        time.sleep(0.05)


class _Lines:
    """A process's output, collected by a thread, searchable while it runs."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, fragment: str, seconds: float) -> str:
        give_up = time.monotonic() + seconds
        with self._changed:
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                left = give_up - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line with {fragment!r} in {seconds:g} s: {self.lines}"
                    )
                self._changed.wait(left)

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


class Process:
    """A child process with its output (stdout and stderr merged) collected."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.output: _Lines | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env=self.env,
        )
        self.output = _Lines(self.process.stdout)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_for(self, fragment: str, seconds: float = 30.0) -> str:
        assert self.output is not None
        return self.output.wait_for(fragment, seconds)

    def stop(self, sig: int = signal.SIGTERM, seconds: float = 60.0) -> int:
        """Signal it and wait; killed if it is still there after `seconds`."""
        assert self.process is not None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"{self.argv[:4]} did not stop within {seconds:g} s") from None
        return self.process.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()


class SimProcess(Process):
    """`python -m qgadash.sim`: a fleet named vm-00000... with faults spread evenly."""

    def __init__(
        self,
        directory: Path,
        count: int,
        faults: Mapping[str, int] | None = None,
        poll_interval: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self.directory = directory
        self.count = count
        self.faults = dict(faults or {})
        argv = [sys.executable, "-m", "qgadash.sim", "--dir", str(directory), "--count", str(count)]
        for name, number in self.faults.items():
            argv += ["--fault", f"{name}={number}"]
        argv += ["--poll-interval", str(poll_interval), "--timeout", str(timeout)]
        super().__init__(argv)

    def start(self) -> None:
        super().start()
        self.wait_for("ready", 60)

    @property
    def hosts(self) -> Path:
        return self.directory / "hosts.toml"

    def vm_ids(self, fault: str | None = None) -> set[str]:
        """The ids (`sim/vm-00003`) of the VMs with this fault (None: every VM)."""
        assigned = assign_faults(self.count, {Fault(k): v for k, v in self.faults.items()})
        width = max(5, len(str(self.count - 1)))
        return {
            f"sim/vm-{i:0{width}d}"
            for i, f in enumerate(assigned)
            if fault is None or f is Fault(fault)
        }


def qgadash(*args: str) -> list[str]:
    return [sys.executable, "-m", "qgadash", *args]
