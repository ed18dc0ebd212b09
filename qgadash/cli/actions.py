"""The verbs that act on guests: fstrim, shutdown, suspend, exec, and the raw `agent`
passthrough (judged per command by qgadash.agent.policy)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qgadash.agent.policy import changes_guest, command_policy
from qgadash.cli.freeze import cmd_freeze
from qgadash.cli.progress import ActionBar, plural
from qgadash.cli.select import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    confirm,
    names,
    poll_selected,
    print_results,
    printable_block,
)
from qgadash.fleet.actions import Action
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.sanitize import printable


async def _simple_action(
    engine: FleetEngine, args: argparse.Namespace, action_name: str, question: str, run: Any
) -> int:

    action = {
        "fstrim": Action.FSTRIM,
        "shutdown": Action.SHUTDOWN,
        "suspend-ram": Action.SUSPEND_RAM,
        "suspend-disk": Action.SUSPEND_DISK,
        "suspend-hybrid": Action.SUSPEND_HYBRID,
        "exec": Action.EXEC,
    }[action_name]
    chosen = await poll_selected(engine, args)
    plan = engine.plan(action, [s.id for s in chosen])
    if plan.eligible and not await confirm(
        f"{question} {plural(len(plan.eligible))} ({names(plan.eligible)})?", args
    ):
        return EXIT_FAILED
    results = []
    if plan.eligible:
        with ActionBar(action_name, len(plan.eligible)) as bar:
            results = await run(plan.eligible, bar)
    return print_results(action_name, results, plan.skipped, args.json)


async def cmd_fstrim(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine,
        args,
        "fstrim",
        "Trim",
        lambda ids, bar: engine.fstrim(ids, minimum=args.minimum, progress=bar),
    )


async def cmd_shutdown(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine,
        args,
        "shutdown",
        f"Shut down ({args.mode})",
        lambda ids, bar: engine.shutdown(ids, mode=args.mode, progress=bar),
    )


async def cmd_suspend(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine,
        args,
        f"suspend-{args.kind}",
        f"Suspend to {args.kind}",
        lambda ids, bar: engine.suspend(ids, kind=args.kind, progress=bar),
    )


async def cmd_exec(engine: FleetEngine, args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("exec needs a command: qgadash exec [SELECT] -- COMMAND [ARG]...")
    if args.json:
        return await _simple_action(
            engine,
            args,
            "exec",
            f"Run {printable(argv[0], 80)!r} on",
            lambda ids, bar: engine.exec(ids, argv, timeout=args.timeout, progress=bar),
        )

    chosen = await poll_selected(engine, args)
    plan = engine.plan(Action.EXEC, [s.id for s in chosen])
    if plan.eligible and not await confirm(
        f"Run {printable(argv[0], 80)!r} on {plural(len(plan.eligible))} ({names(plan.eligible)})?",
        args,
    ):
        return EXIT_FAILED
    results = []
    if plan.eligible:
        with ActionBar("exec", len(plan.eligible)) as bar:
            results = await engine.exec(plan.eligible, argv, timeout=args.timeout, progress=bar)
    status = EXIT_OK
    for r in results:
        if r.ok and isinstance(r.value, dict):
            code = r.value.get("exitcode")
            how = f"exit {code}" if code is not None else f"signal {r.value.get('signal')}"
            print(f"== {r.vm_id} ({how})")
            out = printable_block(r.value.get("stdout", ""))
            err = printable_block(r.value.get("stderr", ""))
            if out:
                print(out)
            if err:
                print(err, file=sys.stderr)
            if code != 0:
                status = EXIT_FAILED
        else:
            print(f"== {r.vm_id} FAILED: {printable(r.error, 300)}")
            status = EXIT_FAILED
    for vm_id, why in plan.skipped:
        print(f"== {vm_id} skipped: {why}")
        status = EXIT_FAILED
    return status


async def cmd_agent(engine: FleetEngine, args: argparse.Namespace) -> int:
    await engine.discover()
    if engine.store.get(args.vm) is None:
        raise UsageError(
            f"{printable(args.vm, 80)}: no such VM (ids look like HYPERVISOR/NAME; a VM that"
            " is shut off has no agent socket to be found by, see `qgadash status`)"
        )
    arguments = None
    if args.arguments:
        try:
            arguments = json.loads(args.arguments)
        except ValueError as exc:
            raise UsageError(f"JSON_ARGUMENTS is not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise UsageError("JSON_ARGUMENTS must be a JSON object")
    name = args.agent_command
    if command_policy(name).freeze:
        # A raw freeze is a freeze: the same guard, keepers, hold and exit status.
        mountpoints = (arguments or {}).get("mountpoints")
        if mountpoints is not None and not (
            isinstance(mountpoints, list) and all(isinstance(m, str) for m in mountpoints)
        ):
            raise UsageError("mountpoints must be a JSON list of strings")
        freeze_args = argparse.Namespace(
            match=[args.vm],
            tag=[],
            json=False,
            yes=args.yes,
            mountpoint=mountpoints or [],
            thaw_after=args.thaw_after,
        )
        return await cmd_freeze(engine, freeze_args)
    if changes_guest(name, arguments) and not await confirm(
        f"Run {printable(name, 60)} on {args.vm}? It may change the guest", args
    ):
        return EXIT_FAILED
    result = await engine.agent_command(args.vm, name, arguments)
    if result.ok:
        print(json.dumps(result.value, indent=2))
        return EXIT_OK
    print(f"qgadash: {args.vm}: {printable(result.error, 500)}", file=sys.stderr)
    return EXIT_FAILED
