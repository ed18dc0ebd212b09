"""SIGKILL of `qgadash freeze` on a real guest: the local keeper ends the ext4 freeze.

Nobody is left alive but the detached keeper: the CLI is killed -9 right after its
freeze, and this test does not touch the guest's agent until the keeper says (by
removing the hold from the journal) that it is done. What proves the freeze ended is
the guest's own clock: a writer in the guest appends to /data in a loop and reports the
one write that blocked, from when to when (guest uptime), which maps onto this
machine's clock through the uptime it read when it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentCommandError
from qgadash.agent.replies import ExecStatus
from qgadash.fleet.holds import HoldJournal
from qgadash.fleet.keeper import KEEPER_GRACE
from qgadash.fleet.model import AgentState
from tests.guests.product import (
    CliProcess,
    audit_entries,
    engine_for,
    ensure_thawed,
    exec_start,
    exec_status,
    guest_freeze_status,
    run_in_guest,
    snap,
    vm_id,
    wait_for,
    write_hosts,
)
from tests.guests.vm import Guest

pytestmark = pytest.mark.guest

THAW_AFTER = 3
PROMISE = 10.0  # issue 11: nothing stays frozen past its deadline + 10 s
BLOCKED = 1.0  # a write that took this long was held by the freeze
# Appends one line to /data every ~0.1 s until one write blocks, then reports it.
WRITER = r"""
read -r s _ < /proc/uptime; echo start $s
i=0
while [ $i -lt 900 ]; do
  read -r t0 _ < /proc/uptime
  echo $t0 >> /data/kill-writer && sync
  read -r t1 _ < /proc/uptime
  if awk -v a=$t0 -v b=$t1 -v m=BLOCKED 'BEGIN { exit !(b - a >= m) }'; then
    echo blocked $t0 $t1; exit 0
  fi
  usleep 100000
  i=$((i + 1))
done
echo never blocked; exit 1
""".replace("BLOCKED", str(BLOCKED))


def keeper_pids(journal: Path) -> list[int]:
    """The local keepers serving `journal` (their command line names it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qgadash.fleet.keeper" in argv and str(journal).encode() in argv:
            out.append(int(entry.name))
    return out


async def test_sigkill_of_the_cli_the_local_keeper_ends_a_real_ext4_freeze(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    guest = shared_guests[0]
    vm = vm_id(guest)
    hosts = write_hosts(tmp_path / "hosts.toml", [guest])
    journal = HoldJournal(tmp_path / "state" / "qgadash" / "holds")
    cli: CliProcess | None = None
    try:
        async with engine_for(tmp_path, [guest], name="watcher.toml") as watcher:

            async def answering() -> bool:
                await watcher.poll_vm(vm)
                return snap(watcher, guest).agent is AgentState.OK

            await wait_for(answering, 20, "the agent to answer", interval=0.2)
            await run_in_guest(watcher, guest, "rm -f /data/kill-writer")
            before = time.time()
            pid = await exec_start(watcher, guest, WRITER)
            after = time.time()  # the writer read its start uptime between the two

            cli = CliProcess(
                hosts, "freeze", "--yes", "--thaw-after", str(THAW_AFTER), "--match", vm,
                tmp_path=tmp_path,
            )  # fmt: skip
            await wait_for(
                lambda: any("thawing in" in line for line in cli.stderr) or cli.proc.poll(),
                30,
                "the CLI to freeze and hold",
            )
            assert cli.proc.poll() is None, cli.output()
            assert "keeper: local" in "".join(cli.stderr), cli.output()
            (record,) = journal.load()[0]
            assert record.vm_id == vm and record.keeper == "local"
            os.kill(cli.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(cli.wait, 10)
            assert time.time() < record.deadline, "killed too late: the CLI may have thawed"
            assert keeper_pids(journal.directory), "no keeper is left to thaw"

            # Hands off the agent: the keeper says when it is done by removing the hold,
            # then writing its audit record (another process: wait for both).
            await wait_for(
                lambda: (
                    journal.load() == ([], [])
                    and any(e["action"] == "thaw (keeper)" for e in audit_entries(tmp_path))
                ),
                record.deadline + PROMISE - time.time(),
                "the keeper's thaw",
                interval=0.1,
            )
            thaws = [e for e in audit_entries(tmp_path) if e["action"] == "thaw (keeper)"]
            assert [(e["vm"], e["ok"]) for e in thaws] == [(vm, True)], thaws
            assert not [e for e in audit_entries(tmp_path) if e["action"] == "thaw (deadline)"]

            async def exited() -> ExecStatus | None:
                try:
                    status = await exec_status(watcher, guest, pid)
                except AgentCommandError as exc:
                    if exc.disabled:  # refused while frozen: the writer is still blocked
                        return None
                    raise
                return status if status.exited else None

            status = await wait_for(exited, 10, "the writer to finish after the thaw")
            assert status is not None  # wait_for returns only a truthy answer
            out = status.stdout.decode(errors="replace")
            assert status.exitcode == 0, out
            lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
            assert "blocked" in lines, out
            start = float(lines["start"])
            t0, t1 = (float(x) for x in lines["blocked"].split())
            # The write blocked by the freeze, for as long as nobody thawed: from before
            # the deadline until the keeper's thaw, a grace after it.
            assert t1 - t0 >= THAW_AFTER * 0.5, f"blocked {t1 - t0:.1f} s only"
            resumed_latest = after + (t1 - start)
            resumed_earliest = before + (t1 - start)
            assert resumed_latest <= record.deadline + PROMISE, (
                f"resumed {resumed_latest - record.deadline:.1f} s after the deadline"
            )
            assert resumed_earliest >= record.deadline + KEEPER_GRACE - 1.0, (
                f"resumed {record.deadline - resumed_earliest:.1f} s before the deadline: "
                "someone other than the keeper thawed"
            )
            await run_in_guest(watcher, guest, "rm -f /data/kill-writer")
    finally:
        if cli is not None:
            cli.kill()
        for keeper in keeper_pids(journal.directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(keeper, signal.SIGTERM)
        ensure_thawed(guest)
    assert guest_freeze_status(guest) == "thawed"
