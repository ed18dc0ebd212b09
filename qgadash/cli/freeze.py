"""`freeze` and `thaw`: the hold in the foreground until the deadline (or a stop
signal), the keepers named before the confirmation."""

from __future__ import annotations

import argparse
import asyncio
import time

from qgadash.cli.progress import ActionBar, Countdown, plural
from qgadash.cli.select import (
    EXIT_FAILED,
    UsageError,
    confirm,
    names,
    poll_selected,
    print_results,
)
from qgadash.fleet.actions import VSS_FREEZE_LIMIT, Action, freeze_deadline
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import ActionResult
from qgadash.fleet.sanitize import printable
from qgadash.fleet.signals import say


async def cmd_freeze(engine: FleetEngine, args: argparse.Namespace) -> int:

    chosen = await poll_selected(engine, args)
    plan = engine.plan(Action.FREEZE, [s.id for s in chosen])
    after = engine.settings.thaw_after if args.thaw_after is None else args.thaw_after
    if after < 0:
        raise UsageError("--thaw-after must be 0 or more seconds")
    if not plan.eligible:
        return print_results("freeze", [], plan.skipped, args.json)
    when = "never (--thaw-after 0; no keeper)" if after == 0 else f"after {after:g} s"
    clamped = [
        vm_id for vm_id in plan.eligible if freeze_deadline(engine.store.get(vm_id), after) < after
    ]
    if clamped:
        when += f" ({plural(len(clamped))} after {VSS_FREEZE_LIMIT:g} s)"
        say(
            f"Windows guests hold a freeze at most {VSS_FREEZE_LIMIT:g} s (VSS lets the writes "
            f"go by itself): {names(clamped)} will be thawed after {VSS_FREEZE_LIMIT:g} s"
        )
    if after > 0:
        say(keeper_summary(await engine.keepers(plan.eligible), engine))
    if not await confirm(
        f"Freeze {plural(len(plan.eligible))} ({names(plan.eligible)}), thaw {when}?", args
    ):
        return EXIT_FAILED
    with ActionBar("freeze", len(plan.eligible)) as bar:
        results = await engine.freeze(
            plan.eligible, mountpoints=args.mountpoint or None, thaw_after=after, progress=bar
        )
    frozen = [r.vm_id for r in results if r.ok]
    status = print_results("freeze", results, plan.skipped, args.json)
    if after == 0:
        for vm_id in engine.frozen_by_us():  # handed to the operator: not ours to thaw
            engine.guard.release(vm_id, "left frozen (--thaw-after 0)")
        if frozen:
            say(f"left frozen: {plural(len(frozen))}; no keeper armed (--thaw-after 0)")
        return status
    if engine.guard.owed():
        kinds = sorted({h.keeper for h in engine.guard.holds()})
        say(
            f"frozen: {plural(len(frozen))}; thawing in {after:g} s (keeper: {', '.join(kinds)}; "
            "Ctrl-C, SIGTERM or closing the terminal thaws now)"
        )
        if not await hold_until_thawed(engine, after + engine.settings.thaw_retry_for):
            status = EXIT_FAILED  # `run` names every VM still frozen
        elif not engine.guard.owed():
            say(f"thawed: {plural(len(frozen))}")
    return status


def keeper_summary(keepers: dict[str, str | None], engine: FleetEngine) -> str:
    """Before a freeze: which keepers will thaw at the deadline if this process cannot,
    and every VM that gets none (and why)."""
    armed: dict[str, int] = {}
    none: list[str] = []
    for vm_id, why in keepers.items():
        if why is None:
            snap = engine.store.get(vm_id)
            link = snap.ref.hypervisor if snap else "?"
            where = "this machine" if engine.is_local(vm_id) else f"hypervisor {link}"
            armed[where] = armed.get(where, 0) + 1
        else:
            none.append(f"  {printable(vm_id, 80)}: {printable(why, 200)}")
    parts = [f"{n} on {where}" for where, n in sorted(armed.items())]
    text = "keepers (thaw at the deadline even if qgadash dies): " + (", ".join(parts) or "none")
    if none:
        text += f"\nNO KEEPER for {plural(len(none))} (only this process will thaw them):\n"
        text += "\n".join(none)
    return text


async def hold_until_thawed(engine: FleetEngine, seconds: float) -> bool:
    """Wait while the guard thaws at the deadline (retrying failures) for up to `seconds`;
    whether every hold ended. A stop signal ends the hold early, as the contract says
    ("until Ctrl-C, which thaws at once"): the command goes on and `run` thaws."""
    try:
        async with Countdown(lambda: len(engine.guard.holds()), lambda: next_thaw(engine)):
            async with asyncio.timeout(seconds):
                await engine.guard.settled()
    except TimeoutError:
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.uncancel() == 0:
            return True  # the thaw on exit decides the exit status
        raise
    return True


def next_thaw(engine: FleetEngine) -> float | None:
    """Seconds to the nearest deadline of a hold of this process, None if none is timed."""
    deadlines = [h.deadline for h in engine.guard.holds() if h.deadline is not None]
    return min(deadlines) - time.time() if deadlines else None


async def cmd_thaw(engine: FleetEngine, args: argparse.Namespace) -> int:

    chosen = await poll_selected(engine, args)
    plan = engine.plan(Action.THAW, [s.id for s in chosen])
    if plan.eligible and not await confirm(
        f"Thaw {plural(len(plan.eligible))} ({names(plan.eligible)})?", args
    ):
        return EXIT_FAILED
    results = []
    if plan.eligible:
        with ActionBar("thaw", len(plan.eligible)) as bar:
            results = await engine.thaw(plan.eligible, progress=bar)
    # "not frozen" is not a failure of a thaw: the goal is reached.
    skipped = [(i, why) for i, why in plan.skipped if why != "not frozen"]
    done = [
        ActionResult(i, True, "not frozen", None) for i, why in plan.skipped if why == "not frozen"
    ]
    return print_results("thaw", results + done, skipped, args.json)
