"""Helpers for the product tests against real guests (``test_product_*.py``).

Everything the tests do to a guest goes through the product — a ``FleetEngine`` built
from a real ``hosts.toml``, or the ``qgadash`` CLI as a subprocess. The fixture's raw
agent client appears only in ``ensure_thawed`` (leaving shared guests usable whatever
a failed test did) and where a test asserts a guest-side fact the product cannot see.
Every wait here is a poll against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from qgadash.agent import replies
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, VmSnapshot

from .agent import AgentError
from .vm import Guest

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]

# Timeouts for guests under TCG: replies take milliseconds, a per-poll connect+sync up
# to ~100 ms (protocol.md); a second means the agent is not answering.
DEFAULT_SETTINGS: dict[str, float] = {
    "timeout": 2.0,
    "action_timeout": 10.0,
    "poll_interval": 0.5,
    "thaw_after": 60.0,
}


def vm_id(guest: Guest) -> str:
    """The product's id of a guest listed as a [[vm]] on this machine."""
    return f"local/{guest.name}"


def write_hosts(
    path: Path,
    guests: Sequence[Guest],
    *,
    session: str | None = None,
    **settings: float,
) -> Path:
    """A hosts.toml naming each guest's agent socket as a [[vm]] (id ``local/NAME``)."""
    values = {**DEFAULT_SETTINGS, **settings}
    lines = ["[settings]"] + [f"{key} = {value!r}" for key, value in values.items()]
    for guest in guests:
        lines += ["", "[[vm]]", f'name = "{guest.name}"', f'agent = "{guest.agent_socket}"']
        if session is not None:
            lines.append(f'session = "{session}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def engine_for(
    tmp_path: Path,
    guests: Sequence[Guest],
    *,
    session: str | None = None,
    name: str = "hosts.toml",
    **settings: float,
) -> AsyncIterator[FleetEngine]:
    """A FleetEngine over `guests`, discovered (not yet polled); stopped on exit."""
    hosts = write_hosts(tmp_path / name, guests, session=session, **settings)
    engine = FleetEngine(load_config(hosts))
    try:
        await engine.discover()
        yield engine
    finally:
        await engine.stop()


def snap(engine: FleetEngine, guest: Guest) -> VmSnapshot:
    snapshot = engine.store.get(vm_id(guest))
    assert snapshot is not None, f"{vm_id(guest)} is not in the engine's store"
    return snapshot


@overload
async def wait_for(
    check: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.05
) -> T: ...


@overload
async def wait_for(
    check: Callable[[], T], timeout: float, what: str, interval: float = 0.05
) -> T: ...


async def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Call `check` (sync or async) until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {last!r})")
        await asyncio.sleep(interval)


def wait_for_sync(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {last!r})")
        time.sleep(interval)


class StateLog:
    """Every agent state the store publishes for one VM, in order (for transitions)."""

    def __init__(self, engine: FleetEngine, guest: Guest) -> None:
        self._engine = engine
        self._id = vm_id(guest)
        self.states: list[tuple[float, AgentState]] = []
        self._unsubscribe = engine.store.subscribe(self._changed)
        # The store notifies once per take_changes(): consume what came before us.
        engine.store.take_changes()
        self._changed()

    def _changed(self) -> None:
        self._engine.store.take_changes()
        current = self._engine.store.get(self._id)
        if current is None:
            return
        if not self.states or self.states[-1][1] is not current.agent:
            self.states.append((time.monotonic(), current.agent))

    def since(self, t: float) -> list[AgentState]:
        return [s for at, s in self.states if at >= t]

    def close(self) -> None:
        self._unsubscribe()


# -- guest-exec through the engine (the freeze test needs the raw pid) ----------------------


async def exec_start(engine: FleetEngine, guest: Guest, script: str) -> int:
    """Start `/bin/sh -c script` through the product's session; the guest pid."""
    args = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
    value = await engine.with_agent(
        vm_id(guest), lambda c: c.call("guest-exec", args, timeout=engine.settings.timeout)
    )
    return replies.parse_exec(value)


async def exec_status(engine: FleetEngine, guest: Guest, pid: int) -> replies.ExecStatus:
    value = await engine.with_agent(
        vm_id(guest),
        lambda c: c.call("guest-exec-status", {"pid": pid}, timeout=engine.settings.timeout),
    )
    return replies.parse_exec_status(value)


async def run_in_guest(engine: FleetEngine, guest: Guest, script: str) -> dict[str, Any]:
    """`engine.exec` of one shell script; the result's value (fails on a failed action)."""
    (result,) = await engine.exec([vm_id(guest)], ["/bin/sh", "-c", script], timeout=20)
    assert result.ok, f"exec {script!r} on {guest.name}: {result.error}"
    value: dict[str, Any] = result.value
    return value


# -- the CLI ------------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment for CLI subprocesses: the audit log goes under tmp_path."""
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_argv(hosts: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "qgadash", "--hosts", str(hosts), *args]


def run_cli(
    hosts: Path, *args: str, tmp_path: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(hosts, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=cli_env(tmp_path),
        stdin=subprocess.DEVNULL,
    )


def cli_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"not JSON (exit {proc.returncode}): {proc.stdout!r}\nstderr: {proc.stderr}"
        ) from exc
    return doc


def audit_entries(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "qgadash" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class CliProcess:
    """A long-running CLI subprocess whose output is collected by threads."""

    def __init__(self, hosts: Path, *args: str, tmp_path: Path) -> None:
        self.proc = subprocess.Popen(
            cli_argv(hosts, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=cli_env(tmp_path),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def output(self) -> str:
        return "".join(self.stdout) + "\n-- stderr:\n" + "".join(self.stderr)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- leaving guests usable ------------------------------------------------------------------------


def ensure_thawed(guest: Guest, timeout: float = 10.0) -> None:
    """Thaw `guest` with the fixture's raw client (teardown safety for shared guests).

    Call only when no product session holds the guest's socket.
    """
    if not guest.is_running():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with guest.agent(timeout=3) as agent:
                if agent.execute("guest-fsfreeze-status") != "thawed":
                    agent.execute("guest-fsfreeze-thaw")
                return
        except (OSError, AgentError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def unread_by_guest(guest: Guest) -> int:
    """Bytes written to the guest's agent socket that QEMU has not read (the receive queue
    of its end, from `ss`). While QEMU is stopped, more than 0 proves a request went out."""
    out = subprocess.run(
        ["ss", "-xHn", "src", str(guest.agent_socket)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return sum(int(f[2]) for f in (line.split() for line in out.splitlines()) if f[1] == "ESTAB")


def guest_freeze_status(guest: Guest) -> str:
    """What the guest itself says (fixture client), for asserting guest-side facts."""
    with guest.agent(timeout=5) as agent:
        return str(agent.execute("guest-fsfreeze-status"))


def wait_console(guest: Guest, marker: str, timeout: float, count: int = 1) -> None:
    """Until `marker` appears `count` times on the guest's serial console."""
    needle = marker.encode()

    def seen() -> bool:
        try:
            return guest.console_log.read_bytes().count(needle) >= count
        except FileNotFoundError:
            return False

    try:
        wait_for_sync(seen, timeout, f"{marker!r} x{count} on {guest.name}'s console")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n-- console tail:\n{guest.console_tail()}") from None
