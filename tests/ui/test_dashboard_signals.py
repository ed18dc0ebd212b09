"""The dashboard in a real terminal (tmux) holding a freeze, then a signal from outside.

`python -m qgadash --hosts H` runs in a tmux pane against simulated agents served by this
test's event loop (so every agent's frozen state is read directly, and nothing here may
block the loop: tmux is driven through asyncio subprocesses). The operator marks every
VM, freezes and confirms with keys; then the qgadash process gets SIGHUP (also as the
terminal closing: `tmux kill-session`), SIGTERM, SIGINT or SIGQUIT, and must thaw every
guest at once and exit; or SIGKILL, after which its local keeper thaws by the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from qgadash.fleet.holds import HoldJournal, HoldRecord
from qgadash.fleet.keeper import KEEPER_GRACE
from qgadash.sim import SimFleet, SimVm, make_profile
from tests.integration.realagent import missing_peer, short_temp_dir
from tests.integration.sshd import descendants

REPO = Path(__file__).resolve().parents[2]
COUNT = 4
PROMPT_SECONDS = 5.0  # "every guest thawed within a few seconds" of a stop signal
PROMISE = 10.0  # issue 11: nothing stays frozen past its deadline + 10 s


async def wait_until(condition: Callable[[], bool], what: str, seconds: float) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def argv_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


class Terminal:
    """One tmux session running the dashboard; driven without blocking the event loop."""

    def __init__(self, name: str, status: Path) -> None:
        self.name = name
        self.status = status
        self.pid: int | None = None  # the dashboard's, once asked for

    async def tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "tmux",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {err.decode(errors='replace')}")
        return out.decode(errors="replace")

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p", "-t", self.name)

    async def keys(self, *keys: str) -> None:
        for key in keys:
            await self.tmux("send-keys", "-t", self.name, key)
            await asyncio.sleep(0.2)  # a person types slower than tmux; not a wait for state

    async def wait_for(self, check: Callable[[str], bool], what: str, seconds: float = 30) -> str:
        give_up = time.monotonic() + seconds
        screen = await self.screen()
        while not check(screen):
            if time.monotonic() > give_up:
                raise AssertionError(f"{what}: not within {seconds:g} s; the screen:\n{screen}")
            await asyncio.sleep(0.2)
            screen = await self.screen()
        return screen

    async def qgadash_pid(self) -> int:
        """The dashboard's process: below the pane's shell, `python -m qgadash --hosts`
        (its local keeper, `-m qgadash.fleet.keeper`, is a child of it until it dies)."""
        pane = int((await self.tmux("list-panes", "-t", self.name, "-F", "#{pane_pid}")).split()[0])
        found = [p for p in [pane, *descendants(pane)] if argv_of(p)[1:3] == [b"-m", b"qgadash"]]
        assert len(found) == 1, found
        self.pid = found[0]
        return found[0]

    async def exit_status(self, seconds: float = 10) -> str:
        await wait_until(self.status.exists, "the pane's shell to record the exit status", seconds)
        await wait_until(lambda: self.status.read_text().strip() != "", "the status", 2)
        return self.status.read_text().strip()


@pytest.fixture
async def sim() -> AsyncIterator[SimFleet]:
    directory = short_temp_dir("qds-sim-")
    # Linux profiles only: the simulated Windows agent refuses a thaw after 10 s frozen.
    vms = [SimVm(f"vm{i}", make_profile(i)) for i in range(COUNT)]
    try:
        async with SimFleet(directory, vms) as fleet:
            yield fleet
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def names(fleet: SimFleet) -> list[str]:
    return [vm.name for vm in fleet.vms]


def ids(fleet: SimFleet) -> list[str]:
    return [f"sim/{n}" for n in names(fleet)]


def frozen(fleet: SimFleet) -> list[str]:
    return [n for n in names(fleet) if fleet.agent(n).frozen]


def write_hosts(path: Path, fleet: SimFleet, thaw_after: float) -> Path:
    lines = [
        "[settings]",
        "poll_interval = 1.0",
        "timeout = 1.0",
        "action_timeout = 2.0",
        f"thaw_after = {float(thaw_after)!r}",
        "",
        "[[hypervisor]]",
        'name = "sim"',
        f"agents = [{json.dumps(str(fleet.directory / '*.sock'))}]",
        'session = "per-poll"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def audit_vms(state: Path, action: str) -> list[str]:
    path = state / "qgadash" / "audit.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(str(r["vm"]) for r in records if r["action"] == action)


def keeper_pids(journal: HoldJournal) -> list[int]:
    directory = str(journal.directory).encode()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and b"qgadash.fleet.keeper" in (argv := argv_of(int(entry.name)))
        and directory in argv
    ]


StartDashboard = Callable[[float], Awaitable["Dashboard"]]


class Dashboard:
    """What a test needs: the terminal, the state directory, the journal."""

    def __init__(self, terminal: Terminal, state: Path) -> None:
        self.terminal = terminal
        self.state = state
        self.journal = HoldJournal(state / "qgadash" / "holds")


@pytest.fixture
async def dashboard(tmp_path: Path, sim: SimFleet) -> AsyncIterator[StartDashboard]:
    """`await start(thaw_after)`: the dashboard in a fresh tmux session, showing the
    fleet; every session and local keeper is gone after the test."""
    if shutil.which("tmux") is None:
        missing_peer("tmux", "tmux")
    started: list[Dashboard] = []

    async def start(thaw_after: float) -> Dashboard:
        n = len(started)
        hosts = write_hosts(tmp_path / f"hosts{n}.toml", sim, thaw_after)
        state = tmp_path / f"state{n}"
        status = tmp_path / f"status{n}"
        env = {
            "TERM": "xterm-256color",
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "XDG_STATE_HOME": str(state),
            "PYTHONPATH": str(REPO),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "PATH": os.environ.get("PATH", ""),
        }
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        command = (
            f"cd {REPO} && env -i {exports} {sys.executable} -m qgadash --hosts {hosts}; "
            f"echo $? > {status}; sleep 60"
        )
        terminal = Terminal(f"qgadash-signals-{uuid.uuid4().hex[:8]}", status)
        board = Dashboard(terminal, state)
        started.append(board)
        await terminal.tmux(
            "new-session", "-d", "-x", "200", "-y", "50", "-s", terminal.name, command
        )
        await terminal.wait_for(lambda s: all(i in s for i in ids(sim)), "the fleet's rows")
        await terminal.wait_for(lambda s: f"{COUNT} ok" in s, "every agent answering")
        return board

    try:
        yield start
    finally:
        running: list[int] = []
        for board in started:
            with contextlib.suppress(RuntimeError, TimeoutError, AssertionError, ValueError):
                await board.terminal.qgadash_pid()
            if board.terminal.pid is not None:
                running.append(board.terminal.pid)
            with contextlib.suppress(RuntimeError, TimeoutError):
                await board.terminal.tmux("kill-session", "-t", board.terminal.name)
        with contextlib.suppress(AssertionError):  # the agents stay up while it thaws
            await wait_until(lambda: not any(map(alive, running)), "the dashboard's exit", 10)
        for pid in filter(alive, running):  # hung (HANGS_WITHOUT_TERMINAL)
            os.kill(pid, signal.SIGKILL)
        for board in started:
            for keeper in keeper_pids(board.journal):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(keeper, signal.SIGTERM)


async def freeze_everything(board: Dashboard, fleet: SimFleet) -> list[HoldRecord]:
    """Mark all, freeze, confirm; once every agent is frozen, the journal's holds."""
    terminal = board.terminal
    await terminal.keys("a")
    await terminal.keys("f")
    # The confirmation: Cancel has the focus; the confirm button ("Freeze 4 VMs") is
    # enabled once the dialog has said where a thaw keeper can be armed.
    await terminal.wait_for(
        lambda s: "Cancel" in s and f"Freeze {COUNT} VMs" in s, "the freeze confirmation"
    )
    await terminal.wait_for(
        lambda s: "keeper" in s.lower() and "checking" not in s.lower(), "the keeper answer"
    )
    assert frozen(fleet) == []
    await terminal.keys("Tab", "Enter")  # Cancel -> the confirm button, pressed
    await wait_until(lambda: sorted(frozen(fleet)) == names(fleet), "every agent frozen", 15)
    await wait_until(
        lambda: sorted(r.vm_id for r in board.journal.load()[0]) == ids(fleet),
        "every hold in the journal",
        5,
    )
    return board.journal.load()[0]


@pytest.mark.parametrize(
    "how",
    ["SIGHUP", "tmux kill-session", "SIGTERM", "SIGINT", "SIGQUIT"],
)
async def test_a_stop_signal_to_the_dashboard_thaws_every_vm_at_once_and_exits(
    dashboard: StartDashboard, sim: SimFleet, how: str
) -> None:
    board = await dashboard(600)
    await freeze_everything(board, sim)
    pid = await board.terminal.qgadash_pid()
    if how == "tmux kill-session":
        await board.terminal.tmux("kill-session", "-t", board.terminal.name)  # the pane's HUP
        sig = signal.SIGHUP
    else:
        sig = signal.Signals[how]
        os.kill(pid, sig)
    # The promise: every guest thawed at once, each thaw on record, nothing left owed.
    await wait_until(lambda: frozen(sim) == [], f"every VM thawed after {how}", PROMPT_SECONDS)
    await wait_until(
        lambda: audit_vms(board.state, f"thaw (signal {sig.name})") == ids(sim),
        "a thaw record per VM",
        5,
    )
    await wait_until(lambda: board.journal.load() == ([], []), "no hold left owed", 5)
    assert audit_vms(board.state, "keeper disarmed") == ids(sim)
    assert audit_vms(board.state, "thaw (keeper)") == []
    # Then the process ends, cleanly: no hang without a terminal (Textual's writer
    # thread died on the closed terminal and its full queue blocked the loop), no
    # traceback after the thaw (the stop ran outside the app's context).
    await wait_until(lambda: not alive(pid), f"the dashboard gone after {how}", 15)
    if how == "tmux kill-session":
        return  # the pane's shell died of the same SIGHUP: no exit status to read
    status = await board.terminal.exit_status()
    screen = await board.terminal.screen()
    assert "Traceback" not in screen, screen
    assert status == "0", screen


async def test_sigkill_of_the_dashboard_the_local_keeper_thaws_by_the_deadline(
    dashboard: StartDashboard, sim: SimFleet
) -> None:
    board = await dashboard(4)
    records = await freeze_everything(board, sim)
    deadline = max(r.deadline for r in records)
    assert {r.keeper for r in records} == {"local"}
    pid = await board.terminal.qgadash_pid()
    os.kill(pid, signal.SIGKILL)
    assert time.time() < deadline, "killed too late: the dashboard may have thawed"
    assert sorted(frozen(sim)) == names(sim)
    assert keeper_pids(board.journal), "no keeper left to thaw"
    await wait_until(
        lambda: frozen(sim) == [], "the keeper's thaws", deadline + PROMISE - time.time()
    )
    thawed_at = time.time()
    assert thawed_at >= deadline + KEEPER_GRACE - 1.0, "thawed early: not by the keeper"
    await wait_until(lambda: audit_vms(board.state, "thaw (keeper)") == ids(sim), "audited", 5)
    assert audit_vms(board.state, "thaw (deadline)") == []
    await wait_until(lambda: board.journal.load() == ([], []), "the holds removed", 5)
    assert await board.terminal.exit_status() == str(128 + signal.SIGKILL)
