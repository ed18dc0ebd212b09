"""The CLI's freeze and signal paths in this process: `qgadash.cli.run` on simulated
agents, real signals sent to the test process, the real journal and audit log.

tests/integration/test_freeze_safety.py runs the same contract as a subprocess (SIGKILL
and the keeper need one). Here the CLI runs on the test's own event loop, so each test
takes a second or two and every line of `cli/lifecycle.py` and `cli/freeze.py` it runs
is seen by mutation testing (scripts/mutation.sh). The local keeper process is not
started (its start is stubbed, see `no_keeper_process`) except where a test says so: it
costs a second, and more under mutation testing, which would eat short deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qgadash import cli
from qgadash.cli import freeze as freeze_module
from qgadash.cli import lifecycle
from qgadash.cli import select as select_module
from qgadash.cli.freeze import keeper_summary
from qgadash.cli.lifecycle import report_settled, report_thaws
from qgadash.cli.select import EXIT_FAILED, EXIT_OK, UsageError
from qgadash.fleet import guard as guard_module
from qgadash.fleet.actions import VSS_FREEZE_LIMIT, ReadOnlyError
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.guard import FreezeGuard
from qgadash.fleet.holds import (
    LOCAL_KEEPER,
    HoldJournal,
    HoldRecord,
    Owner,
    Reach,
    new_token,
)
from qgadash.fleet.keeper import KEEPER_GRACE, ensure_local_keeper, keeper_running
from qgadash.fleet.keeping import HoldKeeping, Settled
from qgadash.fleet.model import ActionResult, VmRef
from qgadash.fleet.store import FleetStore
from qgadash.sim import Fault, SimFleet, SimVm, make_profile

COUNT = 3
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]


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


class Engines:
    """Every FleetEngine the CLI builds, so a test can wait on what it holds."""

    def __init__(self) -> None:
        self.made: list[FleetEngine] = []

    @property
    def last(self) -> FleetEngine:
        assert self.made, "the CLI has not built its engine yet"
        return self.made[-1]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    async with SimFleet.healthy(tmp_path / "sim", COUNT) as sim:
        yield sim


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_STATE_HOME for the CLI's audit log and hold journal."""
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Engines:
    seen = Engines()

    class SeenEngine(FleetEngine):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen.made.append(self)

    monkeypatch.setattr(lifecycle, "FleetEngine", SeenEngine)
    return seen


@pytest.fixture
def no_keeper_process(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The local keeper's start, stubbed: each call is counted, no process runs."""
    starts: list[str] = []

    async def start(self: HoldKeeping) -> None:
        starts.append("start")

    monkeypatch.setattr(HoldKeeping, "_ensure_local_keeper", start)
    return starts


@pytest.fixture
def unhandled_signals() -> Iterator[list[int]]:
    """Stop signals that reach Python's own handlers, not the CLI's: recorded instead of
    ending the test process (a CLI that forgot its handlers fails the test, not pytest)."""
    seen: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda number, frame: seen.append(number))
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Stderr:
    """What the CLI said on stderr so far (capsys drained into one growing text)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.out = ""
        self.err = ""

    def read(self) -> str:
        captured = self._capsys.readouterr()
        self.out += captured.out
        self.err += captured.err
        return self.err


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Stderr:
    return Stderr(capsys)


def parse(hosts: Path, *argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["--hosts", str(hosts), *argv])


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.005)


async def finish(task: asyncio.Task[int], seconds: float = 30) -> int:
    """The CLI's exit status; a CLI still running after `seconds` is stopped (and so
    thaws) before the test fails."""
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        raise


def names(fleet: SimFleet) -> list[str]:
    return [vm.name for vm in fleet.vms]


def ids(fleet: SimFleet) -> list[str]:
    return [f"sim/{n}" for n in names(fleet)]


def frozen(fleet: SimFleet) -> list[str]:
    return [n for n in names(fleet) if fleet.agent(n).frozen]


def audit_records(state: Path) -> list[dict[str, Any]]:
    path = state / "qgadash" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def actions(state: Path, action: str) -> list[str]:
    return sorted(str(r["vm"]) for r in audit_records(state) if r["action"] == action)


def journal(state: Path) -> HoldJournal:
    return HoldJournal(state / "qgadash" / "holds")


def in_hold(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the CLI waits out its hold (frozen, deadline ahead)."""
    holding = asyncio.Event()
    real = freeze_module.hold_until_thawed

    async def hold(engine: FleetEngine, seconds: float) -> bool:
        holding.set()
        return await real(engine, seconds)

    monkeypatch.setattr(freeze_module, "hold_until_thawed", hold)
    return holding


# -- the hold ends by itself ------------------------------------------------------------


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_of_several_vms_thaws_each_at_its_deadline_and_exits_0(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, thaw_retry_for=2)  # a hold that
    # did not end by its deadline fails this test in 2.5 s, not after a minute
    code = await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0.5"))
    err = output.read()
    assert code == EXIT_OK, err
    assert frozen(fleet) == []
    for action in ("freeze", "keeper armed", "thaw (deadline)", "keeper disarmed"):
        assert actions(state, action) == ids(fleet), action  # one record per VM
    assert journal(state).load() == ([], [])
    assert f"frozen: {COUNT} VMs; thawing in 0.5 s (keeper: local;" in err
    assert f"thawed: {COUNT} VMs" in err
    assert "keepers (thaw at the deadline even if qgadash dies): 3 on this machine" in err
    assert "COULD NOT THAW" not in err


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_with_one_vm_whose_thaw_fails_exits_1_naming_it_and_thaws_the_rest(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    output: Stderr,
    engines: Engines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.1, 0.2))
    hosts = write_hosts(
        tmp_path / "hosts.toml", fleet, timeout=0.3, action_timeout=0.3, thaw_retry_for=1
    )
    holding = in_hold(monkeypatch)
    bad = names(fleet)[0]
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0.3")))
    await asyncio.wait_for(holding.wait(), 20)
    fleet.agent(bad).fault = Fault.SILENT  # stops answering (and acting) before the deadline
    code = await finish(task)
    err = output.read()
    assert code == EXIT_FAILED, err
    assert frozen(fleet) == [bad]  # the others were thawed at their deadline
    assert f"COULD NOT THAW sim/{bad}" in err
    assert "thaw it by hand (`qgadash thaw --match VM`)" in err
    failed = [r for r in audit_records(state) if r["vm"] == f"sim/{bad}" and r["ok"] is False]
    assert {r["action"] for r in failed} >= {"thaw (deadline)"}
    assert engines.last.guard.owned() == [f"sim/{bad}"]
    # The record stays for the keeper (or the next start): nobody else owes that thaw.
    assert [r.vm_id for r in journal(state).load()[0]] == [f"sim/{bad}"]
    fleet.agent(bad).fault = Fault.NONE


async def test_cli_freeze_starts_the_local_keeper_before_the_freeze_goes_out(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    holding = in_hold(monkeypatch)
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 30)
    try:
        assert keeper_running(journal(state))
        assert sorted(r.vm_id for r in journal(state).load()[0]) == ids(fleet)
        assert {r.keeper for r in journal(state).load()[0]} == {LOCAL_KEEPER}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert frozen(fleet) == []  # cancelled (not a signal): still thawed on the way out
    assert actions(state, "thaw (quit)") == ids(fleet)


@pytest.mark.usefixtures("no_keeper_process")
async def test_the_countdown_during_the_cli_hold_counts_to_the_nearest_deadline(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    engines: Engines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    holding = in_hold(monkeypatch)
    before = time.time()
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 20)
    try:
        engine = engines.last
        nearest = min(h.deadline for h in engine.guard.holds() if h.deadline is not None)
        asked = time.time()
        left = freeze_module.next_thaw(engine)
        assert left is not None
        assert nearest - time.time() <= left <= nearest - asked  # seconds from now
        assert 590 < left <= 600 - (asked - before) + 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert frozen(fleet) == []
    assert freeze_module.next_thaw(engine) is None  # nothing held: no countdown


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_thaw_after_0_leaves_the_guests_frozen_and_owes_nothing(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr, engines: Engines
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    code = await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0"))
    err = output.read()
    assert code == EXIT_OK, err
    assert sorted(frozen(fleet)) == names(fleet)
    assert f"left frozen: {COUNT} VMs; no keeper armed (--thaw-after 0)" in err
    assert "keepers (" not in err  # no keeper is named: none is armed
    assert engines.last.guard.owned() == []
    assert actions(state, "keeper armed") == []
    assert actions(state, "thaw (quit)") == []
    assert journal(state).load() == ([], [])
    code = await cli.run(parse(hosts, "thaw", "--yes"))
    assert code == EXIT_OK, output.read()
    assert frozen(fleet) == []


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_takes_its_default_thaw_after_from_the_settings(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, thaw_after=0.4)
    code = await cli.run(parse(hosts, "freeze", "--yes", "--match", "sim/vm-00000"))
    err = output.read()
    assert code == EXIT_OK, err
    assert "thawing in 0.4 s" in err
    assert actions(state, "thaw (deadline)") == ["sim/vm-00000"]
    assert frozen(fleet) == []


async def test_cli_freeze_refuses_a_negative_thaw_after(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    with pytest.raises(UsageError, match="--thaw-after must be 0 or more seconds"):
        await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "-1"))
    assert frozen(fleet) == []
    assert actions(state, "freeze") == []


async def test_cli_freeze_is_refused_in_read_only_mode(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    with pytest.raises(ReadOnlyError, match="read-only mode: `freeze` is not allowed"):
        await cli.run(parse(hosts, "--read-only", "freeze", "--yes", "--thaw-after", "1"))
    assert frozen(fleet) == []


def test_a_read_only_thaw_exits_2_before_reaching_any_guest(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[[hypervisor]]\nname = "sim"\nagents = ["{tmp_path}/*.sock"]\n')
    assert cli.main(["--hosts", str(hosts), "--read-only", "thaw", "--yes"]) == 2


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_with_nothing_eligible_freezes_nothing_and_exits_1(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    assert await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0")) == EXIT_OK
    code = await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "5"))
    output.read()
    assert code == EXIT_FAILED
    assert output.out.count("FAILED   skipped: ") == COUNT
    assert actions(state, "keeper armed") == []
    assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_thaw_of_a_guest_that_is_not_frozen_succeeds(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    code = await cli.run(parse(hosts, "thaw", "--yes", "--json"))
    output.read()
    document = json.loads(output.out)
    assert code == EXIT_OK
    assert actions(state, "thaw") == []  # nothing sent: nothing was frozen
    assert json.dumps(document).count('"ok": true') == COUNT


# -- stop signals ---------------------------------------------------------------------


@pytest.mark.usefixtures("no_keeper_process")
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
async def test_a_stop_signal_during_the_cli_hold_thaws_every_vm_at_once_and_exits_0(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    output: Stderr,
    unhandled_signals: list[int],
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    holding = in_hold(monkeypatch)
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 20)
    assert sorted(frozen(fleet)) == names(fleet)
    os.kill(os.getpid(), sig)
    code = await finish(task, 20)
    err = output.read()
    assert unhandled_signals == []
    assert code == EXIT_OK, err  # the contract: a signal ends the hold; all thawed
    assert frozen(fleet) == []
    assert actions(state, f"thaw (signal {sig.name})") == ids(fleet)
    assert f"qgadash: thawing {COUNT} VMs before exit…" in err
    assert all(f"thawed sim/{n}" in err for n in names(fleet))
    assert journal(state).load() == ([], [])


@pytest.mark.usefixtures("no_keeper_process")
async def test_a_stop_signal_before_the_freeze_exits_with_the_signal_and_freezes_nothing(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    unhandled_signals: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    asked = asyncio.Event()

    async def slow_confirm(question: str, args: argparse.Namespace) -> bool:
        asked.set()
        await asyncio.sleep(30)  # the operator has not answered yet
        return True

    monkeypatch.setattr(freeze_module, "confirm", slow_confirm)
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--thaw-after", "600")))
    await asyncio.wait_for(asked.wait(), 20)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await finish(task, 10) == 128 + signal.SIGTERM
    assert unhandled_signals == []
    assert frozen(fleet) == []
    assert actions(state, "freeze") == []


@pytest.mark.usefixtures("no_keeper_process")
async def test_a_second_signal_during_the_cli_thaw_does_not_abandon_it(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    output: Stderr,
    engines: Engines,
    unhandled_signals: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, action_timeout=10)
    holding = in_hold(monkeypatch)
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 20)
    for name in names(fleet):
        fleet.agent(name).fault = Fault.SLOW  # each reply 0.2 s late: the thaw takes a while
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_until(lambda: engines.last.guard.closed, "the thaw on exit begun")
    for sig in STOP_SIGNALS:
        os.kill(os.getpid(), sig)
        await asyncio.sleep(0)
    code = await finish(task, 30)
    err = output.read()
    assert unhandled_signals == []
    assert code == EXIT_OK, err
    assert frozen(fleet) == []
    assert actions(state, "thaw (signal SIGTERM)") == ids(fleet)
    assert f"qgadash: SIGINT: thawing {COUNT} VMs, please wait" in err


# -- what an earlier qgadash left -------------------------------------------------------


def dead_owner() -> Owner:
    """The owner of a hold whose process has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return Owner(proc.pid, "0", Owner.this_process().host)


def left_behind(
    fleet: SimFleet, state: Path, name: str, deadline: float, keeper: str = LOCAL_KEEPER
) -> HoldRecord:
    address = str(fleet.directory.resolve() / f"{name}.sock")
    record = HoldRecord(
        new_token(),
        f"sim/{name}",
        Reach("sim", address),
        deadline,
        keeper,
        dead_owner(),
        time.time() - 10,
    )
    journal(state).write(record)
    return record


@pytest.mark.usefixtures("no_keeper_process")
async def test_the_next_cli_start_thaws_what_a_dead_qgadash_owed_and_says_so(
    tmp_path: Path, fleet: SimFleet, state: Path, output: Stderr
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    first, second, third = names(fleet)
    assert await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0")) == EXIT_OK
    left_behind(fleet, state, first, time.time() - 5)  # overdue, its keeper gone too
    left_behind(fleet, state, second, time.time() + 600)  # its keeper still waits
    (journal(state).directory / "0bad.json").write_text("{not json")
    output.read()
    code = await cli.run(parse(hosts, "status", "--match", f"sim/{third}"))
    err = output.read()
    assert code == EXIT_OK, err
    assert f"qgadash: thawed sim/{first}: an earlier qgadash froze it and died" in err
    assert f"qgadash: sim/{second} is frozen by an earlier qgadash; its local keeper" in err
    assert "qgadash: COULD NOT THAW a journal entry, owed by an earlier qgadash: unreadable" in err
    assert sorted(frozen(fleet)) == [second, third]
    assert actions(state, "thaw (journal)") == [f"sim/{first}"]
    assert sorted(r.vm_id for r in journal(state).load()[0]) == [f"sim/{second}"]
    assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK


async def test_the_local_keeper_process_thaws_a_dead_owners_overdue_hold_and_audits_it(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    """The keeper is `python -m qgadash.fleet.keeper` on the package this test imported
    (its PYTHONPATH is that package's root): under mutation testing, the mutated tree."""
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    name = names(fleet)[0]
    code = await cli.run(
        parse(hosts, "freeze", "--yes", "--thaw-after", "0", "--match", f"sim/{name}")
    )
    assert code == EXIT_OK
    left_behind(fleet, state, name, time.time() - KEEPER_GRACE)  # due at the first scan
    await ensure_local_keeper(journal(state), state / "qgadash" / "audit.jsonl")
    await wait_until(lambda: not fleet.agent(name).frozen, "the keeper's thaw", 15)
    await wait_until(lambda: actions(state, "thaw (keeper)") == [f"sim/{name}"], "its record", 5)
    assert journal(state).load() == ([], [])
    (record,) = [r for r in audit_records(state) if r["action"] == "thaw (keeper)"]
    assert record["ok"] is True and record["error"] is None


# -- the words and the exit status ---------------------------------------------------------


def test_report_thaws_turns_success_into_exit_1_when_a_vm_may_still_be_frozen(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = [ActionResult("hv/a", True, 1, None), ActionResult("hv/b", False, None, "timeout")]
    assert report_thaws(results, EXIT_OK) == EXIT_FAILED
    assert report_thaws(results, 130) == 130  # a signal's status is kept
    assert report_thaws(results[:1], EXIT_OK) == EXIT_OK
    assert report_thaws([], EXIT_FAILED) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "thawed hv/a\n" in err
    assert "qgadash: COULD NOT THAW hv/b: timeout — it may still be frozen" in err
    assert "thawed hv/b" not in err


def test_report_settled_says_what_became_of_each_earlier_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report_settled(
        [
            Settled("hv/a", "thawed"),
            Settled("hv/b", "thawed by keeper", "systemd"),
            Settled("hv/c", "pending", "local keeper thaws in 5 s"),
            Settled("hv/d", "failed", "link down"),
            Settled("", "failed", "unreadable hold record x"),
        ]
    )
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "qgadash: thawed hv/a: an earlier qgadash froze it and died before its thaw",
        "qgadash: hv/b was thawed at its deadline by the keeper (systemd)",
        "qgadash: hv/c is frozen by an earlier qgadash; its local keeper thaws in 5 s",
        "qgadash: COULD NOT THAW hv/d, owed by an earlier qgadash: link down",
        "qgadash: COULD NOT THAW a journal entry, owed by an earlier qgadash: "
        "unreadable hold record x",
    ]


class KeeperEngine:
    """Just what keeper_summary reads of an engine."""

    def __init__(self, local: set[str]) -> None:
        self.local = local
        self.store = self

    def get(self, vm_id: str) -> Any:
        return argparse.Namespace(ref=argparse.Namespace(hypervisor=vm_id.split("/")[0]))

    def is_local(self, vm_id: str) -> bool:
        return vm_id in self.local


def test_keeper_summary_names_each_keeper_and_every_vm_without_one() -> None:
    engine = KeeperEngine({"sim/a", "sim/b"})
    keepers: dict[str, str | None] = {
        "sim/a": None,
        "sim/b": None,
        "hv1/c": None,
        "hv2/d": "systemd-run: not found",
        "hv2/e": "\x1b[31mno socat",
    }
    text = keeper_summary(keepers, engine)  # type: ignore[arg-type]
    assert text.splitlines() == [
        "keepers (thaw at the deadline even if qgadash dies): 1 on hypervisor hv1, "
        "2 on this machine",
        "NO KEEPER for 2 VMs (only this process will thaw them):",
        "  hv2/d: systemd-run: not found",
        "  hv2/e: \\x1b[31mno socat",
    ]
    assert keeper_summary({"hv2/d": "down"}, engine).startswith(  # type: ignore[arg-type]
        "keepers (thaw at the deadline even if qgadash dies): none\nNO KEEPER for 1 VM"
    )


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_of_a_windows_guest_says_its_hold_is_cut_to_the_vss_limit(
    tmp_path: Path,
    state: Path,
    output: Stderr,
    engines: Engines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profiles = [make_profile(i) for i in range(40)]
    linux = next(p for p in profiles if not p.windows)
    windows = next(p for p in profiles if p.windows)
    async with SimFleet(tmp_path / "sim", [SimVm("lin", linux), SimVm("win", windows)]) as sim:
        hosts = write_hosts(tmp_path / "hosts.toml", sim)
        holding = in_hold(monkeypatch)
        task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
        await asyncio.wait_for(holding.wait(), 20)
        try:
            guard = engines.last.guard
            left = {h.vm_id: h.deadline - time.time() for h in guard.holds() if h.deadline}
            assert set(left) == {"sim/lin", "sim/win"}
            assert 590 < left["sim/lin"] <= 600
            assert 0 < left["sim/win"] <= VSS_FREEZE_LIMIT
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not sim.agent("lin").frozen and not sim.agent("win").frozen
    err = output.read()
    assert (
        "Windows guests hold a freeze at most 10 s (VSS lets the writes go by itself): "
        "sim/win will be thawed after 10 s"
    ) in err
    assert "frozen: 2 VMs; thawing in 600 s (keeper: local;" in err


async def test_cli_freeze_names_the_vss_limit_in_its_question(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = [make_profile(i) for i in range(40)]
    windows = next(p for p in profiles if p.windows)
    asked: list[str] = []

    async def refuse(question: str, args: argparse.Namespace) -> bool:
        asked.append(question)
        return False

    monkeypatch.setattr(freeze_module, "confirm", refuse)
    async with SimFleet(tmp_path / "sim", [SimVm("win", windows)]) as sim:
        hosts = write_hosts(tmp_path / "hosts.toml", sim)
        code = await cli.run(parse(hosts, "freeze", "--thaw-after", "600"))
        assert not sim.agent("win").frozen
    assert code == EXIT_FAILED  # not confirmed: nothing done
    assert asked == ["Freeze 1 VM (sim/win), thaw after 600 s (1 VM after 10 s)?"]
    assert actions(state, "freeze") == []


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_thaw_asks_naming_the_frozen_vms_and_does_nothing_unconfirmed(
    tmp_path: Path, fleet: SimFleet, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    assert await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0")) == EXIT_OK
    asked: list[str] = []

    async def refuse(question: str, args: argparse.Namespace) -> bool:
        asked.append(question)
        return False

    monkeypatch.setattr(freeze_module, "confirm", refuse)
    assert await cli.run(parse(hosts, "thaw")) == EXIT_FAILED
    assert asked == [f"Thaw {COUNT} VMs ({', '.join(ids(fleet))})?"]
    assert sorted(frozen(fleet)) == names(fleet)  # not confirmed: still frozen
    assert actions(state, "thaw") == []
    monkeypatch.setattr(freeze_module, "confirm", select_module.confirm)
    assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK
    assert frozen(fleet) == []


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_thaw_reports_each_vm_and_a_vm_not_frozen_as_done(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    first, second, third = ids(fleet)
    for vm_id in (first, second):
        code = await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0", "--match", vm_id))
        assert code == EXIT_OK
    capsys.readouterr()
    assert await cli.run(parse(hosts, "thaw", "--yes", "--json")) == EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document["action"] == "thaw"
    by_vm = {r["id"]: r for r in document["results"]}
    assert set(by_vm) == {first, second, third}
    assert all(r["ok"] is True for r in by_vm.values())
    assert (by_vm[third]["value"], by_vm[third]["error"]) == ("not frozen", None)
    assert frozen(fleet) == []


class GuardOnly:
    """Just what hold_until_thawed reads of an engine: its guard."""

    def __init__(self, thaw_ok: bool) -> None:
        store = FleetStore()
        store.add(VmRef("hv", "vm", "/run/vm.sock"))

        async def thaw(vm_id: str, reason: str) -> ActionResult:
            if thaw_ok:
                self.guard.release(vm_id)
                return ActionResult(vm_id, True, None, None)
            return ActionResult(vm_id, False, None, "link down")

        self.guard = FreezeGuard(store, thaw)


async def test_the_hold_reports_whether_every_deadline_thaw_ended_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.02,))
    thawed, stuck = GuardOnly(thaw_ok=True), GuardOnly(thaw_ok=False)
    for engine in (thawed, stuck):
        engine.guard.record("hv/vm", 0.0)
    assert await freeze_module.hold_until_thawed(thawed, 5) is True  # type: ignore[arg-type]
    assert await freeze_module.hold_until_thawed(stuck, 0.2) is False  # type: ignore[arg-type]
    await stuck.guard.thaw_all()


async def test_the_hold_ends_quietly_on_its_own_stop_but_passes_on_a_second_cancel() -> None:
    """One cancel is the CLI's stop signal: the hold ends and the exit thaw decides the
    status. A cancel on top of that (the loop shutting down) is not swallowed."""
    engine = GuardOnly(thaw_ok=True)
    engine.guard.record("hv/vm", 600)
    for cancels in (1, 2):
        task = asyncio.create_task(freeze_module.hold_until_thawed(engine, 600))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        for _ in range(cancels):
            task.cancel()
        if cancels == 1:
            assert await task is True
        else:
            with pytest.raises(asyncio.CancelledError):
                await task
    await engine.guard.thaw_all()


def test_keeper_summary_of_a_vm_gone_from_the_store_says_its_hypervisor_is_unknown() -> None:
    engine = KeeperEngine(set())
    engine.get = lambda vm_id: None  # type: ignore[method-assign]
    text = keeper_summary({"hv9/gone": None}, engine)  # type: ignore[arg-type]
    assert text == "keepers (thaw at the deadline even if qgadash dies): 1 on hypervisor ?"


def test_report_settled_cuts_a_long_vm_name_to_80_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A VM id comes from the operator's config and the guest's socket names: a line
    about a thaw stays one readable line."""
    name = "hv/" + "v" * 200
    report_settled([Settled(name, "thawed")])
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line
        == f"qgadash: thawed {name[:79]}…: an earlier qgadash froze it and died before its thaw"
    )


def test_exit_lines_cut_long_names_to_80_and_errors_to_300_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The guest's words (an error text) and long names stay bounded lines."""
    name, error = "hv/" + "v" * 200, "e" * 1000
    report_thaws(
        [ActionResult(name, True, 1, None), ActionResult(name, False, None, error)], EXIT_OK
    )
    report_settled([Settled(name, "failed", error)])
    short, cut = name[:79] + "…", error[:299] + "…"
    assert capsys.readouterr().err.splitlines() == [
        f"thawed {short}",
        f"qgadash: COULD NOT THAW {short}: {cut} — it may still be frozen; thaw it by hand "
        "(`qgadash thaw --match VM`)",
        f"qgadash: COULD NOT THAW {short}, owed by an earlier qgadash: {cut}",
    ]


async def test_signals_before_the_engine_exists_exit_at_once_owing_nothing(
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    unhandled_signals: list[int],
) -> None:
    """Ctrl-C twice while the config is still being read (a slow inventory): nothing is
    frozen yet, so no "thawing" message and no error, just the signal's exit status."""
    reading = asyncio.Event()

    async def slow_config(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Any:
        reading.set()
        await asyncio.sleep(30)
        raise AssertionError("the config was not interrupted")

    async def command(engine: FleetEngine, args: argparse.Namespace) -> int:
        raise AssertionError("no command may run")

    args = argparse.Namespace(command="freeze", audit_argv=False)
    task = asyncio.create_task(lifecycle.run_command(args, command, slow_config, True))
    await asyncio.wait_for(reading.wait(), 10)
    with caplog.at_level("ERROR"):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert await finish(task, 10) == 128 + signal.SIGINT
    assert unhandled_signals == []
    assert "please wait" not in capsys.readouterr().err
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


async def test_run_command_closes_what_the_config_opened_and_keeps_argv_when_asked(
    tmp_path: Path, fleet: SimFleet, state: Path
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    closed: list[str] = []

    async def config_for(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Any:
        stack.callback(closed.append, "links closed")  # what a real config opens (SSH)
        return load_config(hosts)

    async def command(engine: FleetEngine, args: argparse.Namespace) -> int:
        assert engine.audit is not None
        engine.audit.record("exec", "sim/x", {"argv": ["mysql", "-pS3cr3t"]}, True, None, 1)
        return EXIT_OK

    for keep in (True, False):
        args = argparse.Namespace(command="exec", audit_argv=keep)
        assert await lifecycle.run_command(args, command, config_for, False) == EXIT_OK
    assert closed == ["links closed", "links closed"]
    kept, hidden = [r["arguments"] for r in audit_records(state) if r["action"] == "exec"]
    assert kept == {"argv": ["mysql", "-pS3cr3t"]}  # --audit-argv
    assert hidden == {"argv": ["mysql", "<1 arguments hidden>"]}


@pytest.mark.usefixtures("no_keeper_process")
async def test_a_stop_signals_thaw_retries_a_vm_whose_first_thaw_failed(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    output: Stderr,
    unhandled_signals: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a signal the exit thaw has a retry budget (the operator asked to stop, and
    will wait); a VM that did not answer the first thaw is tried again."""
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.2,))
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, timeout=0.3, action_timeout=0.3)
    holding = in_hold(monkeypatch)
    bad = names(fleet)[0]
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 20)
    fleet.agent(bad).fault = Fault.SILENT
    os.kill(os.getpid(), signal.SIGTERM)

    def first_thaw_failed() -> bool:
        return any(
            r["vm"] == f"sim/{bad}" and r["ok"] is False and r["action"].startswith("thaw")
            for r in audit_records(state)
        )

    await wait_until(first_thaw_failed, "the first exit thaw of the silent VM failed")
    fleet.agent(bad).fault = Fault.NONE
    code = await finish(task, 30)
    err = output.read()
    assert unhandled_signals == []
    assert code == EXIT_OK, err
    assert frozen(fleet) == []
    assert f"thawed sim/{bad}" in err


@pytest.mark.usefixtures("no_keeper_process")
async def test_an_exit_without_a_signal_thaws_once_and_says_what_it_could_not(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    output: Stderr,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No signal, no retry budget: the exit thaw is tried once, and the exit status and
    the words say which VM may still be frozen (its keeper and journal still hold it)."""
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.2,))
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, timeout=0.3, action_timeout=0.3)
    holding = in_hold(monkeypatch)
    bad = names(fleet)[0]
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
    await asyncio.wait_for(holding.wait(), 20)
    fleet.agent(bad).fault = Fault.SILENT
    task.cancel()  # not a signal: the hold ends, the command returns, the exit thaws
    code = await finish(task, 30)
    err = output.read()
    assert code == EXIT_FAILED, err
    assert f"COULD NOT THAW sim/{bad}" in err
    failed = [r for r in audit_records(state) if r["vm"] == f"sim/{bad}" and r["ok"] is False]
    assert [r["action"] for r in failed] == ["thaw (quit)"]  # once
    fleet.agent(bad).fault = Fault.NONE
    assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK


async def test_a_cancel_that_is_not_a_signal_goes_on_up(
    tmp_path: Path, fleet: SimFleet, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    asked = asyncio.Event()

    async def slow_confirm(question: str, args: argparse.Namespace) -> bool:
        asked.set()
        await asyncio.sleep(30)
        return True

    monkeypatch.setattr(freeze_module, "confirm", slow_confirm)
    task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--thaw-after", "600")))
    await asyncio.wait_for(asked.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert frozen(fleet) == []


# -- what a terminal sees: the bars and the countdown -----------------------------------


class Terminal:
    """stderr on a pseudo-terminal, as an operator's: the CLI's bars and countdown draw
    only there. What reached the terminal is read back as text, escapes removed.

    Attached in the test's body (pytest puts its own capture back on sys.stderr at the
    start of each test phase, after fixtures ran)."""

    _ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

    def __init__(self) -> None:
        self._master, slave = pty.openpty()
        os.set_blocking(self._master, False)
        self._stream = open(slave, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._seen = bytearray()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._seen += os.read(self._master, 65536)

    @property
    def text(self) -> str:
        self._stream.flush()
        self._drain()
        return self._ESCAPES.sub("", self._seen.decode("utf-8", "replace"))

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        previous, sys.stderr = sys.stderr, self._stream
        loop.add_reader(self._master, self._drain)
        try:
            yield
        finally:
            sys.stderr = previous
            loop.remove_reader(self._master)
            self._stream.close()
            os.close(self._master)


@pytest.mark.usefixtures("no_keeper_process", "state")
async def test_a_terminal_sees_the_freeze_bar_the_countdown_to_the_deadline_and_the_thaw_bar(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    terminal = Terminal()
    countdown = re.compile(rf"❄ {COUNT} VMs frozen · thaw in (9:5\d|10:00)  \(Ctrl-C thaws now\)")
    with terminal.attached():
        task = asyncio.create_task(cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "600")))
        try:
            await wait_until(lambda: countdown.search(terminal.text) is not None, "the countdown")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert frozen(fleet) == []
        text = terminal.text
        assert re.search(rf"freeze {COUNT} VMs .*{COUNT}/{COUNT}", text), text  # the bar, full

        assert await cli.run(parse(hosts, "freeze", "--yes", "--thaw-after", "0")) == EXIT_OK
        assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK
        tail = terminal.text[len(text) :]
    assert re.search(rf"thaw {COUNT} VMs .*{COUNT}/{COUNT}", tail), tail
    assert frozen(fleet) == []


@pytest.mark.usefixtures("no_keeper_process")
async def test_cli_freeze_asks_naming_when_it_thaws_and_json_reports_the_mountpoints_frozen(
    tmp_path: Path,
    fleet: SimFleet,
    state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The question says when the thaw comes ("never" for --thaw-after 0); --mountpoint
    reaches each guest (one filesystem frozen, not every one); --json is one document."""
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    asked: list[str] = []

    async def answer(question: str, args: argparse.Namespace) -> bool:
        asked.append(question)
        return "never" in question

    monkeypatch.setattr(freeze_module, "confirm", answer)
    everyone = ", ".join(ids(fleet))
    assert await cli.run(parse(hosts, "freeze", "--thaw-after", "600")) == EXIT_FAILED
    assert asked == [f"Freeze {COUNT} VMs ({everyone}), thaw after 600 s?"]
    assert frozen(fleet) == []
    capsys.readouterr()
    argv = ("freeze", "--thaw-after", "0", "--mountpoint", "/data", "--json")
    assert await cli.run(parse(hosts, *argv)) == EXIT_OK
    assert asked[1] == f"Freeze {COUNT} VMs ({everyone}), thaw never (--thaw-after 0; no keeper)?"
    document = json.loads(capsys.readouterr().out)
    assert document["action"] == "freeze"
    assert {r["id"]: (r["ok"], r["value"]) for r in document["results"]} == {
        vm_id: (True, 1) for vm_id in ids(fleet)
    }
    assert sorted(frozen(fleet)) == names(fleet)
    # Nothing left to freeze: still one JSON document, every VM skipped with its reason.
    assert await cli.run(parse(hosts, *argv)) == EXIT_FAILED
    skipped = json.loads(capsys.readouterr().out)
    assert skipped["action"] == "freeze"
    assert [r["ok"] for r in skipped["results"]] == [False] * COUNT
    monkeypatch.setattr(freeze_module, "confirm", select_module.confirm)
    assert await cli.run(parse(hosts, "thaw", "--yes")) == EXIT_OK
