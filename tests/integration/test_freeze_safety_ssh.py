"""Nothing left frozen over SSH: the CLI as a real process, a real sshd, real signals.

The hypervisor is this machine behind a real OpenSSH sshd on 127.0.0.1 (hosts.toml says
`ssh = ...`); its guests are simulated agents served by the test's event loop on unix
sockets, which the CLI reaches through the SSH connection and the hypervisor-side
keeper reaches with socat. Each test kills or cuts something the freeze depends on and
then only watches: the simulator says when each guest thaws, the audit log, the hold
journal and the keeper's marker files say who did it.

There is no systemd as PID 1 here, so every keeper is the `nohup` kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from qgadash.fleet.holds import HoldRecord
from qgadash.fleet.keeper import KEEPER_GRACE
from qgadash.sim import SimFleet, SimVm, make_profile
from tests.integration.realagent import short_temp_dir
from tests.integration.sshd import SshServer, require_tool
from tests.integration.test_freeze_safety import Cli, audit_records, journal, wait_until
from tests.integration.test_remote_keeper import Armed, alive, marker_dir, sshd_children

pytestmark = [pytest.mark.real_sshd]

HV = "hv1"
NAMES = ["vm0", "vm1"]
IDS = [f"{HV}/{n}" for n in NAMES]
PROMISE = 10.0  # issue 11: nothing stays frozen past its deadline + 10 s


def write_hosts(path: Path, server: SshServer, fleet: SimFleet, **settings: float) -> Path:
    values = {
        "poll_interval": 1.0,
        "timeout": 2.0,
        "action_timeout": 3.0,
        "thaw_retry_for": 4.0,
        **settings,
    }
    lines = ["[settings]", *(f"{k} = {float(v)!r}" for k, v in values.items()), ""]
    lines += [
        "[[hypervisor]]",
        f'name = "{HV}"',
        f"ssh = {json.dumps(server.spec())}",
        f"identity = {json.dumps(str(server.client_key))}",
        f"known_hosts = {json.dumps(str(server.known_hosts))}",
        f"agents = [{json.dumps(str(fleet.directory / '*.sock'))}]",
        'session = "per-poll"',
        "connect_timeout = 3.0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def sim() -> AsyncIterator[SimFleet]:
    require_tool("socat", "socat")  # the hypervisor-side keeper thaws through socat
    directory = short_temp_dir("qfs-sim-")
    vms = [SimVm(name, make_profile(i)) for i, name in enumerate(NAMES)]
    try:
        async with SimFleet(directory, vms) as fleet:
            yield fleet
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def armed() -> Iterator[Armed]:
    """Keepers the CLI armed (tokens noted from its journal): stopped at teardown."""
    holds = Armed()
    yield holds
    holds.clean()


@pytest.fixture
def clis() -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    for cli in started:
        cli.kill()


def frozen(fleet: SimFleet) -> list[str]:
    return [n for n in NAMES if fleet.agent(n).frozen]


def actions(state: Path, action: str) -> list[str]:
    return sorted(str(r["vm"]) for r in audit_records(state) if r["action"] == action)


async def start_freeze(
    hosts: Path, state: Path, clis: list[Cli], armed: Armed, after: float
) -> tuple[Cli, list[HoldRecord]]:
    """`qgadash freeze --thaw-after AFTER` holding every VM; its journal records."""
    cli = await Cli.start(hosts, state, "freeze", "--yes", "--thaw-after", f"{after:g}")
    clis.append(cli)
    await cli.wait_for_line("thawing in")
    assert cli.proc.returncode is None, cli.output()
    assert "keeper: nohup" in cli.output(), cli.output()
    records, problems = journal(state).load()
    assert problems == []
    for record in records:
        armed.add(marker_dir(0), record.token)
    assert sorted(r.vm_id for r in records) == IDS
    assert {r.keeper for r in records} == {"nohup"}
    return cli, records


def keeper_pid(record: HoldRecord) -> int:
    text = (marker_dir(0) / f"{record.token}.pid").read_text().strip()
    return int(text)


def marker(record: HoldRecord) -> Path:
    return marker_dir(0) / record.token


def keepers_gone(records: list[HoldRecord], pids: list[int]) -> bool:
    """No marker, no pid file, no script and no live keeper process is left."""
    files = [p for r in records for p in marker_dir(0).glob(f"{r.token}*")]
    return not files and not any(alive(pid) for pid in pids)


async def wait_thawed_by(fleet: SimFleet, deadline: float, what: str) -> float:
    """Wait until every guest is thawed, at the latest by wall-clock `deadline`; when."""
    await wait_until(lambda: frozen(fleet) == [], what, max(0.0, deadline - time.time()) + 0.1)
    thawed_at = time.time()
    assert thawed_at <= deadline, f"{what}: {thawed_at - deadline:.1f} s late"
    return thawed_at


def assert_keeper_armed_nohup(state: Path) -> None:
    armed = [r for r in audit_records(state) if r["action"] == "keeper armed"]
    assert sorted(str(r["vm"]) for r in armed) == IDS
    for record in armed:
        assert record["ok"] is True, record
        assert isinstance(record["arguments"], dict)
        assert record["arguments"]["keeper"] == "nohup", record


async def test_sigkill_of_the_cli_the_hypervisor_keeper_thaws_by_the_deadline(
    tmp_path: Path, sshd: SshServer, sim: SimFleet, state: Path, armed: Armed, clis: list[Cli]
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", sshd, sim)
    cli, records = await start_freeze(hosts, state, clis, armed, 2)
    assert sorted(frozen(sim)) == NAMES
    assert_keeper_armed_nohup(state)
    pids = [keeper_pid(r) for r in records]
    deadline = max(r.deadline for r in records)
    cli.proc.kill()
    await cli.wait(10)
    assert time.time() < deadline, "killed too late to leave the thaw to the keeper"
    assert sorted(frozen(sim)) == NAMES
    assert all(alive(pid) for pid in pids)  # on the hypervisor, not in the dead CLI
    thawed_at = await wait_thawed_by(sim, deadline + PROMISE, "the hypervisor keeper's thaw")
    assert thawed_at >= deadline - 0.5, "thawed before the deadline: not the keeper's doing"
    await wait_until(lambda: keepers_gone(records, pids), "the keepers finished", 10)
    # The dead CLI could not audit the keeper's thaw; the next start learns of it.
    assert actions(state, "thaw (deadline)") == []
    status = await Cli.start(hosts, state, "status")
    clis.append(status)
    assert await status.wait(30) == 0, status.output()
    for vm_id in IDS:
        assert f"{vm_id} was thawed at its deadline by the keeper (nohup)" in status.output()
    assert actions(state, "thaw (keeper)") == IDS
    assert journal(state).load() == ([], [])


async def test_link_cut_during_the_hold_the_cli_reconnects_thaws_and_disarms(
    tmp_path: Path,
    sshd_factory: Callable[..., SshServer],
    sim: SimFleet,
    state: Path,
    armed: Armed,
    clis: list[Cli],
) -> None:
    """The TCP connection dies right after the freeze but the hypervisor still answers:
    the CLI's own deadline thaw goes over a new connection, so it proves every thaw,
    exits 0 and takes the keepers back (they never fire)."""
    server = sshd_factory()
    hosts = write_hosts(tmp_path / "hosts.toml", server, sim)
    cli, records = await start_freeze(hosts, state, clis, armed, 3)
    pids = [keeper_pid(r) for r in records]
    deadline = max(r.deadline for r in records)
    serving = sshd_children(server)
    assert serving
    for pid in serving:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert time.time() < deadline, "cut too late: the thaw may have been sent already"
    assert sorted(frozen(sim)) == NAMES
    await wait_thawed_by(sim, deadline + PROMISE, "the thaw after the cut")
    assert await cli.wait(30) == 0, cli.output()
    assert "thawed: 2 VMs" in cli.output()
    thaws = [r for r in audit_records(state) if r["action"] == "thaw (deadline)"]
    assert sorted(str(r["vm"]) for r in thaws if r["ok"] is True) == IDS, thaws
    disarmed = [r for r in audit_records(state) if r["action"] == "keeper disarmed"]
    assert sorted(str(r["vm"]) for r in disarmed if r["ok"] is True) == IDS, disarmed
    await wait_until(lambda: keepers_gone(records, pids), "the keepers stopped by disarm", 10)
    assert journal(state).load() == ([], [])


async def test_link_cut_and_hypervisor_unreachable_the_keeper_thaws_and_the_cli_exits_1(
    tmp_path: Path,
    sshd_factory: Callable[..., SshServer],
    sim: SimFleet,
    state: Path,
    armed: Armed,
    clis: list[Cli],
) -> None:
    """The connection dies and sshd with it (a network partition, as the CLI sees it):
    the CLI cannot thaw nor learn whether anyone did, so it exits 1 naming every VM;
    the keeper on the hypervisor thaws by the deadline. Once sshd is back, the next
    start asks the keeper and records its thaws."""
    server = sshd_factory()
    hosts = write_hosts(tmp_path / "hosts.toml", server, sim)
    cli, records = await start_freeze(hosts, state, clis, armed, 3)
    pids = [keeper_pid(r) for r in records]
    deadline = max(r.deadline for r in records)
    server.stop()  # the listener and every connection it serves; keepers are not its
    assert time.time() < deadline, "cut too late: the thaw may have been sent already"
    assert all(alive(pid) for pid in pids)
    assert sorted(frozen(sim)) == NAMES
    await wait_thawed_by(sim, deadline + PROMISE, "the hypervisor keeper's thaw")
    assert await cli.wait(30) == 1, cli.output()
    for vm_id in IDS:
        assert f"COULD NOT THAW {vm_id}" in cli.output(), cli.output()
    assert actions(state, "thaw (deadline)").count(IDS[0]) >= 1
    assert not any(
        r["ok"] is True for r in audit_records(state) if str(r["action"]).startswith("thaw")
    )
    await wait_until(lambda: keepers_gone(records, pids), "the keepers finished", 10)
    assert sorted(r.vm_id for r in journal(state).load()[0]) == IDS  # not proven thawed
    server.start()  # same port, same host key
    status = await Cli.start(hosts, state, "status")
    clis.append(status)
    assert await status.wait(30) == 0, status.output()
    for vm_id in IDS:
        assert f"{vm_id} was thawed at its deadline by the keeper (nohup)" in status.output()
    assert actions(state, "thaw (keeper)") == IDS
    assert journal(state).load() == ([], [])


async def test_next_start_thaws_what_a_killed_cli_and_killed_hypervisor_keeper_owed(
    tmp_path: Path, sshd: SshServer, sim: SimFleet, state: Path, armed: Armed, clis: list[Cli]
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", sshd, sim)
    cli, records = await start_freeze(hosts, state, clis, armed, 2)
    pids = [keeper_pid(r) for r in records]
    deadline = max(r.deadline for r in records)
    cli.proc.kill()
    await cli.wait(10)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the keeper dies too (the marker stays)
    assert time.time() < deadline, "the keepers were killed too late"
    await wait_until(lambda: not any(alive(pid) for pid in pids), "the keepers gone", 5)
    # Past the deadline and past when a keeper would have thawed: nobody did.
    while time.time() < deadline + KEEPER_GRACE + 1.5:
        assert sorted(frozen(sim)) == NAMES
        await asyncio.sleep(0.1)
    assert all(marker(r).exists() for r in records)
    status = await Cli.start(hosts, state, "status")
    clis.append(status)
    assert await status.wait(30) == 0, status.output()
    assert frozen(sim) == []
    for vm_id in IDS:
        assert f"thawed {vm_id}: an earlier qgadash froze it" in status.output()
    assert actions(state, "thaw (journal)") == IDS
    assert journal(state).load() == ([], [])
    # Disarmed after the thaw: no marker, and nothing else of the dead keepers either.
    assert keepers_gone(records, pids), sorted(os.listdir(marker_dir(0)))


async def test_sighup_over_ssh_thaws_at_once_and_disarms_the_hypervisor_keeper(
    tmp_path: Path, sshd: SshServer, sim: SimFleet, state: Path, armed: Armed, clis: list[Cli]
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", sshd, sim)
    cli, records = await start_freeze(hosts, state, clis, armed, 600)
    pids = [keeper_pid(r) for r in records]
    assert all(alive(pid) for pid in pids)
    assert sorted(frozen(sim)) == NAMES
    sent = time.monotonic()
    cli.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: frozen(sim) == [], "the thaw on SIGHUP", 5)
    assert await cli.wait(30) == 0, cli.output()
    assert time.monotonic() - sent < 10
    assert actions(state, "thaw (signal SIGHUP)") == IDS
    disarmed = [r for r in audit_records(state) if r["action"] == "keeper disarmed"]
    assert sorted(str(r["vm"]) for r in disarmed if r["ok"] is True) == IDS, disarmed
    await wait_until(lambda: keepers_gone(records, pids), "no keeper or marker left", 5)
    assert journal(state).load() == ([], [])
