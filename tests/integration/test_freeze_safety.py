"""Nothing left frozen: the CLI as a real process, real signals, simulated agents.

The simulator runs in the test's own event loop (so each agent's frozen state can be
read and its faults switched while the CLI runs); `qgadash freeze` is a subprocess with
its own state directory, so its hold journal, its keeper and its audit log are real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from qgadash.fleet import guard as guard_module
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import HoldJournal
from qgadash.fleet.keeper import keeper_running
from qgadash.sim import Fault, SimFleet

REPO = Path(__file__).resolve().parents[2]
COUNT = 4


def write_hosts(path: Path, fleet: SimFleet, **settings: float) -> Path:
    values = {"poll_interval": 1.0, "timeout": 1.0, "action_timeout": 2.0, **settings}
    lines = ["[settings]", *(f"{k} = {float(v)!r}" for k, v in values.items()), ""]
    lines += [
        "[[hypervisor]]",
        'name = "sim"',
        f"agents = [{json.dumps(str(fleet.directory.resolve() / '*.sock'))}]",
        'session = "per-poll"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Cli:
    """`qgadash --hosts H ARGS` as a subprocess; stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []
        self.stdout = b""
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, hosts: Path, state: Path, *args: str) -> Cli:
        env = dict(os.environ, XDG_STATE_HOME=str(state), PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qgadash",
            "--hosts",
            str(hosts),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None and self.proc.stdout is not None
        out = asyncio.create_task(self.proc.stdout.read())
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace"))
        self.stdout = await out

    async def wait_for_line(self, text: str, seconds: float = 30) -> None:
        await wait_until(
            lambda: any(text in line for line in self.stderr) or self.proc.returncode is not None,
            f"{text!r} on stderr",
            seconds,
        )
        assert any(text in line for line in self.stderr), self.output()

    async def wait(self, seconds: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), seconds)
        await asyncio.wait_for(self._reader, 10)
        return code

    def output(self) -> str:
        return self.stdout.decode(errors="replace") + "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)


def audit_records(state: Path) -> list[dict[str, object]]:
    path = state / "qgadash" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def actions(state: Path, action: str) -> list[str]:
    return sorted(str(r["vm"]) for r in audit_records(state) if r["action"] == action)


def journal(state: Path) -> HoldJournal:
    return HoldJournal(state / "qgadash" / "holds")


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    async with SimFleet.healthy(tmp_path / "sim", COUNT) as sim:
        yield sim


def names(fleet: SimFleet) -> list[str]:
    return [vm.name for vm in fleet.vms]


def ids(fleet: SimFleet) -> list[str]:
    return [f"sim/{n}" for n in names(fleet)]


def frozen(fleet: SimFleet) -> list[str]:
    return [n for n in names(fleet) if fleet.agent(n).frozen]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def test_freeze_of_several_vms_ends_by_its_deadline(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "1")
    code = await cli.wait(30)
    assert code == 0, cli.output()
    assert frozen(fleet) == []
    assert actions(state, "freeze") == ids(fleet)
    assert actions(state, "keeper armed") == ids(fleet)
    assert actions(state, "thaw (deadline)") == ids(fleet)
    assert actions(state, "keeper disarmed") == ids(fleet)
    assert journal(state).load() == ([], [])


async def test_a_thaw_that_keeps_failing_exits_1_naming_the_vm_and_the_keeper_finishes(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, action_timeout=0.5, thaw_retry_for=3)
    bad = names(fleet)[0]
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "1")
    await cli.wait_for_line("thawing in")
    fleet.agent(bad).fault = Fault.SILENT  # the agent stops answering (and acting)
    code = await cli.wait(60)
    assert code == 1, cli.output()
    assert f"COULD NOT THAW sim/{bad}" in cli.output()
    assert frozen(fleet) == [bad]  # the others were thawed
    records = [r for r in audit_records(state) if r["vm"] == f"sim/{bad}"]
    assert any(r["action"] == "thaw (deadline)" and r["ok"] is not True for r in records)
    # The hold stays in the journal for the keeper, which thaws once the agent answers.
    assert [r.vm_id for r in journal(state).load()[0]] == [f"sim/{bad}"]
    fleet.agent(bad).fault = Fault.NONE
    await wait_until(lambda: not fleet.agent(bad).frozen, "the keeper's thaw", 45)
    await wait_until(lambda: journal(state).load() == ([], []), "the record removed", 5)
    assert actions(state, "thaw (keeper)").count(f"sim/{bad}") >= 1


@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT],
    ids=lambda s: s.name,
)
async def test_a_stop_signal_during_the_hold_thaws_every_vm_at_once(
    tmp_path: Path, fleet: SimFleet, state: Path, sig: signal.Signals
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "600")
    await cli.wait_for_line("thawing in")
    assert sorted(frozen(fleet)) == names(fleet)
    cli.proc.send_signal(sig)
    code = await cli.wait(30)
    assert code == 0, cli.output()  # the contract: a signal ends the hold; all thawed
    assert frozen(fleet) == []
    assert actions(state, f"thaw (signal {sig.name})") == ids(fleet)
    assert journal(state).load() == ([], [])


async def test_a_second_signal_during_the_thaw_does_not_abandon_it(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, action_timeout=20)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "600")
    await cli.wait_for_line("thawing in")
    for name in names(fleet):
        fleet.agent(name).fault = Fault.LATE_REPLY  # each reply 4 s late: a thaw takes ~12 s
    cli.proc.send_signal(signal.SIGTERM)
    await cli.wait_for_line("before exit")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        cli.proc.send_signal(sig)
    await cli.wait_for_line("please wait")
    code = await cli.wait(60)
    assert code == 0, cli.output()
    assert frozen(fleet) == []
    assert actions(state, "thaw (signal SIGTERM)") == ids(fleet)


async def test_sigkill_of_the_cli_the_keeper_thaws_at_the_deadline(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "2")
    await cli.wait_for_line("thawing in")
    cli.proc.kill()
    killed_at = time.monotonic()
    await cli.wait(10)
    assert sorted(frozen(fleet)) == names(fleet)
    await wait_until(lambda: frozen(fleet) == [], "the keeper's thaws", 15)
    assert time.monotonic() - killed_at < 2 + 10  # deadline + 10 s, the promise
    # The keeper audits right after each thaw: wait for its lines, do not race them.
    await wait_until(
        lambda: actions(state, "thaw (keeper)") == ids(fleet), "the keeper's records", 5
    )
    await wait_until(lambda: journal(state).load() == ([], []), "records removed", 5)


async def keeper_pids(state: Path) -> list[int]:
    directory = str(state / "qgadash" / "holds")
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qgadash.fleet.keeper" in cmdline and directory.encode() in cmdline:
            out.append(int(entry.name))
    return out


async def test_next_start_thaws_what_a_killed_cli_and_killed_keeper_owed(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "1")
    await cli.wait_for_line("thawing in")
    cli.proc.kill()
    await cli.wait(10)
    pids = await keeper_pids(state)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    await wait_until(lambda: not keeper_running(journal(state)), "the keeper gone", 5)
    await asyncio.sleep(1.5)  # past the deadline (1 s) with nobody left to thaw
    assert sorted(frozen(fleet)) == names(fleet)
    status = await Cli.start(hosts, state, "status")
    code = await status.wait(30)
    assert code == 0, status.output()
    assert frozen(fleet) == []
    for vm_id in ids(fleet):
        assert f"thawed {vm_id}: an earlier qgadash froze it" in status.output()
    assert actions(state, "thaw (journal)") == ids(fleet)
    assert journal(state).load() == ([], [])


async def test_holds_of_a_live_qgadash_are_left_to_it(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    holder = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "600")
    try:
        await holder.wait_for_line("thawing in")
        status = await Cli.start(hosts, state, "status")
        assert await status.wait(30) == 0, status.output()
        assert sorted(frozen(fleet)) == names(fleet)
        assert actions(state, "thaw (journal)") == []
        holder.proc.send_signal(signal.SIGTERM)
        assert await holder.wait(30) == 0, holder.output()
        assert frozen(fleet) == []
    finally:
        holder.kill()


async def test_thaw_after_0_leaves_the_guests_frozen_and_arms_no_keeper(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "0")
    assert await cli.wait(30) == 0, cli.output()
    assert "no keeper armed (--thaw-after 0)" in cli.output()
    assert sorted(frozen(fleet)) == names(fleet)
    assert actions(state, "keeper armed") == []
    assert journal(state).load() == ([], [])
    thaw = await Cli.start(hosts, state, "thaw", "--yes")
    assert await thaw.wait(30) == 0, thaw.output()
    assert frozen(fleet) == []


async def engine_with_journal(fleet: SimFleet, tmp_path: Path, state: Path) -> FleetEngine:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    return FleetEngine(
        load_config(hosts),
        audit=AuditLog(state / "qgadash" / "audit.jsonl"),
        journal=journal(state),
    )


async def test_a_guest_rebooted_while_held_ends_the_hold_and_disarms_its_keeper(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    engine = await engine_with_journal(fleet, tmp_path, state)
    vm = ids(fleet)[0]
    try:
        await engine.poll_once()
        (result,) = await engine.freeze([vm], thaw_after=600)
        assert result.ok, result.error
        assert [r.vm_id for r in journal(state).load()[0]] == [vm]
        fleet.agent(names(fleet)[0]).power_on()  # the guest rebooted: its freeze is gone
        await engine.poll_vm(vm)
        assert engine.frozen_by_us() == []
        assert journal(state).load() == ([], [])
        disarmed = [r for r in audit_records(state) if r["action"] == "keeper disarmed"]
        assert [r["arguments"]["why"] for r in disarmed] == ["thawed by someone else"]  # type: ignore[index]
    finally:
        thawed = await engine.stop()
    assert thawed == []  # nothing owed: a thaw now could undo someone else's freeze


async def test_a_hypervisor_down_past_the_deadline_is_thawed_when_it_is_back(
    tmp_path: Path, fleet: SimFleet, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.2, 0.5))
    engine = await engine_with_journal(fleet, tmp_path, state)
    vm, name = ids(fleet)[0], names(fleet)[0]
    try:
        await engine.poll_once()
        (result,) = await engine.freeze([vm], thaw_after=0.5)
        assert result.ok, result.error
        fleet.agent(name).fault = Fault.SILENT  # unreachable past the deadline
        await wait_until(lambda: bool(engine.store.get(vm).thaw_error), "a failed thaw", 10)  # type: ignore[union-attr]
        assert fleet.agent(name).frozen
        fleet.agent(name).fault = Fault.NONE  # back (a rebooted host would also be thawed)
        await wait_until(lambda: engine.frozen_by_us() == [], "the retried thaw", 10)
        assert not fleet.agent(name).frozen
        assert journal(state).load() == ([], [])
    finally:
        await engine.stop()


async def cli_on_a_terminal(
    hosts: Path, state: Path, *args: str
) -> tuple[asyncio.subprocess.Process, int]:
    """qgadash ARGS with a pty as its terminal: (pid, the pty's master fd)."""
    master, slave = os.openpty()
    env = dict(os.environ, XDG_STATE_HOME=str(state), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qgadash",
        "--hosts",
        str(hosts),
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        env=env,
    )
    os.close(slave)
    os.set_blocking(master, False)
    return proc, master


async def read_until(master: int, text: bytes, seconds: float = 30) -> bytes:
    seen = bytearray()

    def more() -> bool:
        try:
            seen.extend(os.read(master, 65536))
        except BlockingIOError:
            pass
        except OSError:
            return True  # EIO: the other side is gone
        return text in seen

    await wait_until(more, f"{text!r} on the terminal", seconds)
    return bytes(seen)


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name
)
async def test_a_stop_signal_at_the_confirmation_prompt_ends_the_command_at_once(
    tmp_path: Path, fleet: SimFleet, state: Path, sig: signal.Signals
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    proc, master = await cli_on_a_terminal(hosts, state, "freeze", "--thaw-after", "60")
    try:
        await read_until(master, b"[y/N]")
        proc.send_signal(sig)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 128 + sig
        assert frozen(fleet) == []
    finally:
        os.close(master)
        if proc.returncode is None:
            proc.kill()


async def test_yes_at_the_prompt_freezes_and_the_hold_thaws(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    proc, master = await cli_on_a_terminal(hosts, state, "freeze", "--thaw-after", "1")
    try:
        screen = await read_until(master, b"[y/N]")
        assert b"keepers (thaw at the deadline even if qgadash dies): 4 on this machine" in screen
        os.write(master, b"y\n")
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0
        assert actions(state, "thaw (deadline)") == ids(fleet)
    finally:
        os.close(master)


async def test_a_deadline_shorter_than_arming_the_keeper_still_freezes_then_thaws(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    """Starting the local keeper takes ~0.5-2 s; a 0.2 s hold used to expire before the
    freeze went out and the freeze was refused as if qgadash were stopping."""
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", "0.2")
    assert await cli.wait(30) == 0, cli.output()
    assert "stopping" not in cli.output()
    assert actions(state, "freeze") == ids(fleet)
    assert actions(state, "thaw (deadline)") == ids(fleet)
    assert frozen(fleet) == []
