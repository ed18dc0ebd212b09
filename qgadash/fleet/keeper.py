"""The local keeper: a detached process that thaws this machine's holds at their deadline.

qgadash's own deadline thaw lives in its process; SIGKILL, a crashed terminal or a
closed laptop lid ends it. So a freeze of an agent this machine reaches directly (a local
socket, tcp, a local libvirt) also starts this keeper, once per user: a process in its
own session (no terminal, so no SIGHUP; not in the shell's process group, so no Ctrl-C)
that reads the hold journal and thaws every record marked `local` whose deadline plus a
grace has passed. It checks that the record still exists right before thawing, so a
hold our own thaw already ended (record removed) is never thawed again. It retries with
backoff, audits what it did, and exits when no local hold has been left for a while.

    python -m qgadash.fleet.keeper --journal DIR [--audit FILE]

One keeper per journal: an exclusive `flock` on DIR/keeper.lock, which is also how a
qgadash process tells that one is running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Settings
from qgadash.fleet.holds import LOCAL_KEEPER, HoldJournal, HoldRecord
from qgadash.fleet.links import make_link

KEEPER_GRACE = 3.0  # seconds after the deadline: the owner, if alive, thaws first
IDLE_EXIT = 10.0  # seconds without a local hold before the keeper exits
SCAN_EVERY = 0.5
RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0)
GIVE_UP_AFTER = 24 * 3600.0  # past the deadline: the record stays for the next start
THAW_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
START_TIMEOUT = 10.0  # a new keeper must hold its lock within this


class KeeperUnavailable(Exception):
    """The local keeper could not be started: say so before freezing anything."""


def lock_path(journal: HoldJournal) -> Path:
    return journal.directory / "keeper.lock"


_probing = threading.Lock()  # our own probe holds the lock for an instant: one at a time


def keeper_running(journal: HoldJournal) -> bool:
    """Whether a keeper holds this journal's lock (probed by taking it for an instant)."""
    journal.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _probing:
        fd = os.open(lock_path(journal), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we may have taken
        return False


async def ensure_local_keeper(journal: HoldJournal, audit_path: Path | None) -> None:
    """Start a keeper for `journal` unless one runs. Call after writing the record: a
    keeper about to exit re-reads the journal under its lock first."""
    if await asyncio.to_thread(keeper_running, journal):
        return
    argv = [sys.executable, "-m", "qgadash.fleet.keeper", "--journal", str(journal.directory)]
    if audit_path is not None:
        argv += ["--audit", str(audit_path)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    except OSError as exc:
        raise KeeperUnavailable(f"cannot start the local keeper: {exc}") from None
    give_up = time.monotonic() + START_TIMEOUT
    while time.monotonic() < give_up:
        if await asyncio.to_thread(keeper_running, journal):
            return
        if process.poll() is not None and not await asyncio.to_thread(keeper_running, journal):
            raise KeeperUnavailable(
                f"the local keeper exited at once (status {process.returncode})"
            )
        await asyncio.sleep(0.02)
    raise KeeperUnavailable(f"the local keeper did not start within {START_TIMEOUT:g} s")


class LocalKeeper:
    """The keeper's loop: scan, thaw what is due, retry what failed, exit when idle."""

    def __init__(self, journal: HoldJournal, audit: AuditLog) -> None:
        self.journal = journal
        self.audit = audit
        self._failures: dict[str, int] = {}
        self._next_try: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    def local_records(self) -> list[HoldRecord]:
        records, _problems = self.journal.load()
        return [r for r in records if r.keeper == LOCAL_KEEPER]

    async def serve(self) -> None:
        idle_since: float | None = None
        while True:
            records = self.local_records()
            now = time.time()
            if records or self._running:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT:
                return
            for record in records:
                due = max(record.deadline + KEEPER_GRACE, self._next_try.get(record.token, 0.0))
                if now >= due and record.token not in self._running:
                    self._running[record.token] = asyncio.get_running_loop().create_task(
                        self._settle(record)
                    )
            await asyncio.sleep(SCAN_EVERY)

    async def _settle(self, record: HoldRecord) -> None:
        try:
            await self._thaw_once(record)
        finally:
            self._running.pop(record.token, None)

    def _still_held(self, record: HoldRecord) -> bool:
        return (self.journal.directory / f"{record.token}.json").exists()

    async def _thaw_once(self, record: HoldRecord) -> None:
        if not self._still_held(record):
            return  # thawed by its owner meanwhile: never thaw someone else's freeze
        started = time.perf_counter()
        args = {"token": record.token, "deadline": record.deadline}
        try:
            await thaw_record(record)
        except AgentConnectionError as exc:
            if os.strerror(errno.ENOENT) in str(exc):
                # The agent socket is gone: the VM stopped, and a stopped VM is not frozen.
                self.journal.remove(record.token)
                self._audit("thaw (keeper)", record, args, False, f"agent gone: {exc}", started)
                return
            self._retry_later(record, args, str(exc), started)
            return
        except AgentError as exc:
            self._retry_later(record, args, str(exc), started)
            return
        if self.journal.remove(record.token):
            self._audit("thaw (keeper)", record, args, True, None, started)

    def _retry_later(self, record: HoldRecord, args: object, error: str, started: float) -> None:
        failures = self._failures.get(record.token, 0) + 1
        self._failures[record.token] = failures
        if failures == 1:
            self._audit("thaw (keeper)", record, args, False, error, started)
        if time.time() > record.deadline + GIVE_UP_AFTER:
            self._audit("keeper gave up", record, args, False, error, started)
            self._next_try[record.token] = float("inf")
            return
        delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
        self._next_try[record.token] = time.time() + delay

    def _audit(
        self,
        action: str,
        record: HoldRecord,
        args: object,
        ok: bool | None,
        error: str | None,
        started: float,
    ) -> None:
        self.audit.record(
            action, record.vm_id, args, ok, error, (time.perf_counter() - started) * 1000
        )


async def thaw_record(record: HoldRecord, timeout: float = THAW_TIMEOUT) -> None:
    """Thaw the agent a record names, over a link rebuilt from the record (raises AgentError)."""
    link = make_link(record.reach.hypervisor_config(), Settings())
    try:
        caller = await link.endpoint(record.reach.address).connect(CONNECT_TIMEOUT)
        try:
            await caller.call("guest-fsfreeze-thaw", None, timeout=timeout)
        finally:
            await caller.close()
    finally:
        await link.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qgadash.fleet.keeper")
    parser.add_argument("--journal", required=True, type=Path)
    parser.add_argument("--audit", type=Path)
    args = parser.parse_args(argv)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    journal = HoldJournal(args.journal)
    journal.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path(journal), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another keeper serves this journal
    keeper = LocalKeeper(journal, AuditLog(args.audit))
    while True:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(keeper.serve())
        # Idle. A qgadash that wrote a record and saw our lock held relies on us: let go
        # of the lock, then look once more; a record seen now is ours again (or a new
        # keeper's, if one took the lock in between).
        fcntl.flock(fd, fcntl.LOCK_UN)
        if not keeper.local_records():
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
