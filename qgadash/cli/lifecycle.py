"""The life of one CLI process: start, settle what an earlier qgadash owed, run the
subcommand, and whatever ends it (return, error, a stop signal) stop the engine, which
thaws, and let the exit status say if a guest this process froze may still be frozen."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence

from qgadash.cli.select import EXIT_FAILED, EXIT_OK
from qgadash.fleet.actions import ReadOnlyError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import HoldJournal
from qgadash.fleet.keeping import Settled
from qgadash.fleet.model import ActionResult
from qgadash.fleet.sanitize import printable
from qgadash.fleet.signals import SignalWatch, say
from qgadash.fleet.tuning import settle_garbage_collector

STOP_RETRY_BUDGET = 20.0  # seconds a thaw on exit (signal, error) is retried


Command = Callable[[FleetEngine, argparse.Namespace], Awaitable[int]]
ConfigFor = Callable[[argparse.Namespace, contextlib.AsyncExitStack], Awaitable[Config]]


async def run_command(
    args: argparse.Namespace, command: Command, config_for: ConfigFor, writes: bool
) -> int:
    """Run one subcommand; whatever ends it (return, error, any stop signal), the engine
    stops and thaws what this process froze, and the exit status says if it could not.
    `writes`: the subcommand may change a guest (refused in read-only mode)."""
    task = asyncio.current_task()
    assert task is not None
    engine: FleetEngine | None = None

    def cancel_command(_sig: signal.Signals) -> None:
        task.cancel()

    watch = SignalWatch(cancel_command, lambda: len(engine.frozen_by_us()) if engine else 0)
    watch.install()
    try:
        async with contextlib.AsyncExitStack() as stack:
            config = await config_for(args, stack)
            if config.settings.read_only and writes:
                raise ReadOnlyError(f"read-only mode: `{args.command}` is not allowed")
            audit = AuditLog(keep_argv=args.audit_argv)
            engine = FleetEngine(
                config,
                audit=None if args.command == "status" else audit,
                journal=HoldJournal(),
                after_discovery=settle_garbage_collector,
            )
            engine.keeping.audit = audit  # settling an earlier run's holds is always audited
            code = EXIT_FAILED
            try:
                report_settled(await engine.settle_journal())
                code = await command(engine, args)
            except asyncio.CancelledError:
                if watch.received is None:
                    raise
                task.uncancel()
                code = 128 + watch.received
            finally:
                watch.stopping()
                if engine.frozen_by_us():
                    say(f"qgadash: thawing {len(engine.frozen_by_us())} VMs before exit…")
                budget = STOP_RETRY_BUDGET if watch.received is not None else 0.0
                results = await engine.stop(watch.reason, budget)
                code = report_thaws(results, code)
            return code
    except asyncio.CancelledError:
        if watch.received is None:
            raise
        return 128 + watch.received
    finally:
        watch.remove()


def report_thaws(results: list[ActionResult], code: int) -> int:
    """Say what the exit thaw did; EXIT_FAILED if any VM is not known to be thawed."""
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            say(f"thawed {printable(r.vm_id, 80)}")
    for r in failed:
        say(
            f"qgadash: COULD NOT THAW {printable(r.vm_id, 80)}: {printable(r.error, 300)}"
            " — it may still be frozen; thaw it by hand (`qgadash thaw --match VM`)"
        )
    return EXIT_FAILED if failed and code == EXIT_OK else code


def report_settled(settled: Sequence[Settled]) -> None:
    """What this start did with holds an earlier, dead qgadash left in the journal."""
    for s in settled:
        vm = printable(s.vm_id, 80)
        if s.outcome == "thawed":
            say(f"qgadash: thawed {vm}: an earlier qgadash froze it and died before its thaw")
        elif s.outcome == "thawed by keeper":
            say(f"qgadash: {vm} was thawed at its deadline by the keeper ({s.detail})")
        elif s.outcome == "pending":
            say(f"qgadash: {vm} is frozen by an earlier qgadash; its {printable(s.detail)}")
        else:
            say(
                f"qgadash: COULD NOT THAW {vm or 'a journal entry'}, owed by an earlier qgadash: "
                f"{printable(s.detail, 300)}"
            )
