"""Freeze and thaw through the product (engine and CLI) inside real booted guests.

Runs on the session's shared guests g1/g2 and leaves them thawed (a raw thaw in every
teardown, so one failure cannot cascade into the next test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentCommandError
from qgadash.agent.replies import ExecStatus
from qgadash.fleet.actions import Action
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, FreezeState
from tests.guests.product import (
    REPO,
    CliProcess,
    cli_argv,
    cli_env,
    cli_json,
    engine_for,
    ensure_thawed,
    exec_start,
    exec_status,
    guest_freeze_status,
    run_cli,
    run_in_guest,
    snap,
    unread_by_guest,
    vm_id,
    wait_for,
    write_hosts,
)
from tests.guests.vm import Guest

pytestmark = pytest.mark.guest

WRITE_DELAY = 2.0  # the writer waits this long before writing: the freeze lands first
FROZEN_WINDOW = 1.5  # how long the write must stay blocked while frozen
# t0: before the write; t1: after it and its sync (guest uptime, seconds).
WRITER = (
    f"usleep {int(WRITE_DELAY * 1e6)}; "
    "read -r t0 _ < /proc/uptime; echo x > /data/product-freeze && sync; "
    "read -r t1 _ < /proc/uptime; echo $t0 $t1"
)


async def test_freeze_blocks_a_write_until_thaw(tmp_path: Path, shared_guests: list[Guest]) -> None:
    guest = shared_guests[1]
    vm = vm_id(guest)
    try:
        async with engine_for(tmp_path, [guest]) as engine:
            await engine.poll_vm(vm)
            assert snap(engine, guest).agent is AgentState.OK, snap(engine, guest).error
            assert snap(engine, guest).freeze is FreezeState.THAWED

            started = time.monotonic()
            pid = await exec_start(engine, guest, WRITER)
            (result,) = await engine.freeze([vm], thaw_after=60)
            frozen_at = time.monotonic()
            assert result.ok is True, result.error
            assert result.value == 1  # /data: the initramfs root cannot be frozen
            assert frozen_at - started < WRITE_DELAY * 0.75, "froze too late to catch the write"
            assert snap(engine, guest).freeze is FreezeState.FROZEN
            assert engine.guard.owned() == [vm]
            await engine.poll_vm(vm)  # the guest itself says so
            assert snap(engine, guest).freeze is FreezeState.FROZEN
            assert snap(engine, guest).agent is AgentState.OK

            # While frozen the agent refuses guest-exec-status (protocol.md), so the
            # writer's own clock proves the block; the refusal is the product's to report.
            with pytest.raises(AgentCommandError) as refused:
                await exec_status(engine, guest, pid)
            assert refused.value.disabled, refused.value

            # The measured window: the write has been due for FROZEN_WINDOW seconds.
            await asyncio_sleep_until(started + WRITE_DELAY + FROZEN_WINDOW)
            (result,) = await engine.thaw([vm])
            thawed_at = time.monotonic()
            assert result.ok is True, result.error
            assert snap(engine, guest).freeze is FreezeState.THAWED
            assert engine.guard.owned() == []

            status = await wait_for(
                lambda: _exited(engine, guest, pid), 5.0, "the blocked write to finish after thaw"
            )
            assert time.monotonic() - thawed_at < 5.0
            assert status is not None and status.exitcode == 0, status
            t0, t1 = (float(x) for x in status.stdout.split())
            assert t1 - t0 >= FROZEN_WINDOW * 0.7, f"write took {t1 - t0:.2f} s: it did not block"

            await engine.poll_vm(vm)
            assert snap(engine, guest).freeze is FreezeState.THAWED
            written = await engine.files.read(vm, "/data/product-freeze")
            assert written.data == b"x\n"
            await run_in_guest(engine, guest, "rm -f /data/product-freeze")
    finally:
        ensure_thawed(guest)


async def asyncio_sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))


async def _exited(engine: FleetEngine, guest: Guest, pid: int) -> ExecStatus | None:
    status = await exec_status(engine, guest, pid)
    return status if status.exited else None


async def test_guard_thaws_at_the_deadline(tmp_path: Path, shared_guests: list[Guest]) -> None:
    guest = shared_guests[0]
    vm = vm_id(guest)
    audit = tmp_path / "audit.jsonl"
    try:
        async with engine_for(tmp_path, [guest]) as engine:
            engine.audit = AuditLog(audit)
            await engine.poll_vm(vm)
            (result,) = await engine.freeze([vm], thaw_after=2)
            assert result.ok is True, result.error
            deadline = engine.guard.deadline(vm)
            assert deadline is not None
            assert snap(engine, guest).thaw_deadline == deadline
            assert time.time() < deadline
            await engine.poll_vm(vm)
            assert snap(engine, guest).freeze is FreezeState.FROZEN  # the guest says so

            def thawed() -> bool:
                s = snap(engine, guest)
                return s.freeze is FreezeState.THAWED and vm not in engine.guard.owned()

            await wait_for(thawed, 2 + 5, "the guard's thaw at the deadline", interval=0.02)
            seen_at = time.time()
            assert deadline <= seen_at <= deadline + 3.0, seen_at - deadline
            assert snap(engine, guest).thaw_deadline is None
            assert snap(engine, guest).thaw_error is None
            await engine.poll_vm(vm)
            assert snap(engine, guest).freeze is FreezeState.THAWED  # the guest agrees
        actions = [line for line in audit.read_text().splitlines() if '"thaw (deadline)"' in line]
        assert len(actions) == 1 and '"ok": true' in actions[0], audit.read_text()
    finally:
        ensure_thawed(guest)
    assert guest_freeze_status(guest) == "thawed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_cli_freeze_thaws_on_signal(
    tmp_path: Path, shared_guests: list[Guest], sig: signal.Signals
) -> None:
    guest = shared_guests[0]
    vm = vm_id(guest)
    hosts = write_hosts(tmp_path / "hosts.toml", shared_guests)
    cli = CliProcess(
        hosts, "freeze", "--yes", "--thaw-after", "60", "--match", vm, tmp_path=tmp_path
    )
    try:
        # A second engine (per-poll, like the CLI: the socket is free between uses).
        async with engine_for(tmp_path, [guest], name="watcher.toml") as watcher:
            await wait_for(
                lambda: any("thawing in" in line for line in cli.stderr) or cli.proc.poll(),
                30,
                "the CLI to report the freeze and wait",
            )
            assert cli.proc.poll() is None, cli.output()

            async def frozen() -> bool:
                await watcher.poll_vm(vm)
                return snap(watcher, guest).freeze is FreezeState.FROZEN

            await wait_for(frozen, 10, "the guest to report frozen", interval=0.1)

            os.kill(cli.proc.pid, sig)
            # Off the loop: a blocked loop would keep the watcher's just-closed socket
            # open (asyncio closes it on the next iteration) and lock the CLI out.
            code = await asyncio.to_thread(cli.wait, 30)
            assert code == 0, cli.output()
            assert f"thawed {vm}" in "".join(cli.stderr), cli.output()
            await watcher.poll_vm(vm)
            assert snap(watcher, guest).freeze is FreezeState.THAWED
    finally:
        cli.kill()
        ensure_thawed(guest)
    assert guest_freeze_status(guest) == "thawed"


async def test_lost_connection_during_freeze_is_reported_and_thawed_on_reconnect(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    """A held session; QEMU is SIGSTOPped so the agent goes silent past the deadline."""
    guest = shared_guests[1]
    vm = vm_id(guest)
    assert guest.pid is not None
    audit = tmp_path / "audit.jsonl"
    stopped = False
    try:
        async with engine_for(
            tmp_path, [guest], session="held", timeout=1.0, action_timeout=2.0
        ) as engine:
            engine.audit = AuditLog(audit)
            await engine.poll_vm(vm)
            assert snap(engine, guest).agent is AgentState.OK, snap(engine, guest).error
            (result,) = await engine.freeze([vm], thaw_after=2)
            assert result.ok is True, result.error

            os.kill(guest.pid, signal.SIGSTOP)
            stopped = True

            async def thaw_failed() -> bool:
                await engine.poll_vm(vm)
                return snap(engine, guest).thaw_error is not None

            await wait_for(thaw_failed, 2 + 2 + 10, "a failed deadline thaw to be reported")
            lost = snap(engine, guest)
            assert lost.agent in (AgentState.TIMEOUT, AgentState.UNREACHABLE), lost
            assert lost.error, lost
            assert "thaw failed" in (lost.thaw_error or "")
            assert lost.freeze is FreezeState.FROZEN  # not claimed thawed
            assert engine.guard.owned() == [vm]

            os.kill(guest.pid, signal.SIGCONT)
            stopped = False

            async def recovered() -> bool:
                await engine.poll_vm(vm)
                s = snap(engine, guest)
                return (
                    s.agent is AgentState.OK
                    and s.freeze is FreezeState.THAWED
                    and s.thaw_error is None
                    and vm not in engine.guard.owned()
                )

            await wait_for(recovered, 20, "the guard to thaw after the link came back")
            status = await engine.with_agent(
                vm, lambda c: c.call("guest-fsfreeze-status", timeout=2.0)
            )
            assert status == "thawed"
            assert snap(engine, guest).thaw_deadline is None
        entries = [json.loads(line) for line in audit.read_text().splitlines()]
        thaws = [e for e in entries if e["action"] == "thaw (deadline)"]
        # The failed attempt is on record as failed or unknown, never as done. What thawed
        # the guest after SIGCONT is either the guard's retry (a later ok entry) or the
        # thaw the agent found queued in its channel, which a poll then saw and released:
        # the end state above is what the operator is promised either way.
        assert thaws and thaws[0]["ok"] is not True and thaws[0]["error"], thaws
    finally:
        if stopped:
            os.kill(guest.pid, signal.SIGCONT)
        ensure_thawed(guest)
    assert guest_freeze_status(guest) == "thawed"


def test_cli_bulk_freeze_and_thaw_two_guests(tmp_path: Path, shared_guests: list[Guest]) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", shared_guests)
    ids = {vm_id(g) for g in shared_guests}
    try:
        proc = run_cli(hosts, "freeze", "--json", "--thaw-after", "0", "--yes", tmp_path=tmp_path)
        doc = cli_json(proc)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert doc["action"] == "freeze"
        results = {r["id"]: r for r in doc["results"]}
        assert set(results) == ids
        for r in results.values():
            assert r["ok"] is True and r["value"] == 1 and r["error"] is None, r

        status = cli_json(run_cli(hosts, "status", "--json", tmp_path=tmp_path))
        states = {v["id"]: (v["fsfreeze"], v["thaw_deadline"]) for v in status["vms"]}
        assert states == {i: ("frozen", None) for i in ids}  # --thaw-after 0: nobody owes it
        for guest in shared_guests:
            assert guest_freeze_status(guest) == "frozen"

        proc = run_cli(hosts, "thaw", "--json", "--yes", tmp_path=tmp_path)
        doc = cli_json(proc)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = {r["id"]: r for r in doc["results"]}
        assert set(results) == ids
        for r in results.values():
            assert r["ok"] is True and r["value"] == 1 and r["error"] is None, r

        status = cli_json(run_cli(hosts, "status", "--json", tmp_path=tmp_path))
        assert {v["id"]: v["fsfreeze"] for v in status["vms"]} == {i: "thawed" for i in ids}
        for guest in shared_guests:
            assert guest_freeze_status(guest) == "thawed"
    finally:
        for guest in shared_guests:
            ensure_thawed(guest)


@pytest.mark.parametrize("thawer", ["engine", "cli"])
async def test_after_a_thaw_exec_and_listing_are_offered_at_the_next_polls(
    tmp_path: Path, shared_guests: list[Guest], thawer: str
) -> None:
    """While frozen the agent's guest-info marks guest-exec (and most commands) disabled.
    Once thawed — by this engine, or by another process (the CLI) that its polls notice —
    the dashboard must not go on refusing exec and file listings as "disabled by the
    guest's policy" until guest-info happens to be read again."""
    guest = shared_guests[1]
    vm = vm_id(guest)
    try:
        async with engine_for(tmp_path, [guest], poll_interval=0.4) as engine:
            await engine.start()
            await wait_for(lambda: snap(engine, guest).agent is AgentState.OK, 10, "first poll")
            assert engine.plan(Action.EXEC, [vm]).eligible == (vm,)
            (result,) = await engine.freeze([vm], thaw_after=60 if thawer == "engine" else 0)
            assert result.ok is True, result.error

            def info_read_while_frozen() -> bool:
                info = snap(engine, guest).facts.info
                return info is not None and info.enabled("guest-exec") is False

            await wait_for(info_read_while_frozen, 10, "a poll to re-read guest-info while frozen")
            skipped = engine.plan(Action.EXEC, [vm]).skipped
            assert skipped and "frozen" in skipped[0][1], skipped  # the right reason

            if thawer == "engine":
                (result,) = await engine.thaw([vm])
                assert result.ok is True, result.error
            else:
                hosts = write_hosts(tmp_path / "cli.toml", [guest])
                args = ("thaw", "--yes", "--json", "--match", vm)
                proc = await asyncio.to_thread(run_cli, hosts, *args, tmp_path=tmp_path)
                assert cli_json(proc)["results"][0]["ok"] is True, proc.stdout + proc.stderr
            thawed = time.time()
            polls: set[float] = set()

            def two_polls_since_thaw() -> bool:
                last = snap(engine, guest).last_poll
                if last is not None and last > thawed:
                    polls.add(last)
                return len(polls) >= 2

            await wait_for(two_polls_since_thaw, 10, "two background polls after the thaw")
            s = snap(engine, guest)
            assert s.freeze is FreezeState.THAWED
            assert engine.plan(Action.EXEC, [vm]).skipped == ()
            assert engine.files.can_list(vm) is None
            listing = await engine.files.list_dir(vm, "/data")
            assert "lost+found" in {e.name for e in listing.entries}
    finally:
        ensure_thawed(guest)


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGINT,
        signal.SIGTERM,
    ],
    ids=["SIGINT", "SIGTERM"],
)
async def test_cli_signal_while_the_freeze_is_in_flight_still_thaws(
    tmp_path: Path, shared_guests: list[Guest], sig: signal.Signals
) -> None:
    """The signal lands after the freeze request left but before its reply: QEMU is
    SIGSTOPped between the CLI's poll and the freeze (the CLI is held at its confirmation
    prompt on a pty meanwhile), so the request waits in the agent's channel."""
    guest = shared_guests[0]
    vm = vm_id(guest)
    assert guest.pid is not None
    # Held: the CLI's poll leaves it a synced connection, so the freeze goes out at once
    # (a per-poll connection would be stuck in its sync, with nothing sent yet).
    hosts = write_hosts(tmp_path / "hosts.toml", [guest], session="held", action_timeout=20.0)
    master, slave = os.openpty()
    proc = subprocess.Popen(
        cli_argv(hosts, "freeze", "--thaw-after", "60", "--match", vm),
        stdin=slave,
        stdout=slave,
        stderr=slave,  # the prompt of input() goes to stderr
        cwd=REPO,
        env=cli_env(tmp_path),
    )
    os.close(slave)
    screen = bytearray()

    def pump() -> None:  # until EOF (EIO on a pty) once the CLI has exited
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 4096):
                screen.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def prompt_shown() -> bool:
        return b"[y/N]" in screen or proc.poll() is not None

    stopped = False
    try:
        await wait_for(prompt_shown, 30, "the confirmation prompt (the poll is done)")
        assert proc.poll() is None, bytes(screen)
        os.kill(guest.pid, signal.SIGSTOP)
        stopped = True
        os.write(master, b"y\n")
        # The CLI writes its freeze on its held connection; the reply cannot come while
        # QEMU is stopped. The window under test: the request sits unread in QEMU's socket.
        await wait_for(
            lambda: unread_by_guest(guest) > 0, 10, "the CLI's freeze queued at the stopped guest"
        )
        assert proc.poll() is None
        os.kill(proc.pid, sig)
        os.kill(guest.pid, signal.SIGCONT)  # the queued freeze now runs in the guest
        stopped = False
        code = await asyncio.to_thread(proc.wait, 40)
        reader.join(5)
        stderr = screen.decode(errors="replace")
        # The promise: the freeze this process sent is thawed before it exits, or it
        # says loudly that it could not. Dying silently with the guest frozen is the bug.
        async with engine_for(tmp_path, [guest], name="watcher.toml") as watcher:
            await watcher.poll_vm(vm)
            state = snap(watcher, guest).freeze
        assert state is FreezeState.THAWED or "COULD NOT THAW" in stderr, (
            f"exit {code}, guest {state.value}, stderr: {stderr}"
        )
        assert code != -sig, f"killed by {sig.name}, nothing thawed; stderr: {stderr}"
    finally:
        if stopped:
            os.kill(guest.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        ensure_thawed(guest)
    assert guest_freeze_status(guest) == "thawed"
