"""Guest administration verbs: time-sync, password, ssh-keys, vcpus.

Each works like the other verbs: the selection is polled, planned (agents that lack the
command are skipped with the reason), confirmed when the command policy says it changes
the guest, then run on every eligible VM at once; one row per VM, exit status 1 if any
failed or was skipped. A password is read from the terminal (twice) or, as a crypt(3)
hash with --crypted, from stdin: never from the command line, so never in `ps`, the
shell's history, the debug log of the arguments or the audit.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qgadash.agent.policy import command_policy
from qgadash.cli.progress import ActionBar, plural
from qgadash.cli.select import (
    EXIT_FAILED,
    UsageError,
    confirm,
    names,
    poll_selected,
    print_results,
)
from qgadash.fleet.actions import Action, ActionPlan
from qgadash.fleet.admin import (
    ProgressCallback,
    Secret,
    drift_text,
    key_diff,
    keys_text,
    parse_when,
    read_key_file,
    vcpus_text,
)
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import ActionResult
from qgadash.fleet.sanitize import printable

Run = Callable[[Sequence[str], ProgressCallback], Any]


def admin_writes(args: argparse.Namespace) -> bool:
    """Whether this invocation may change guests (read-only mode refuses it up front)."""
    if args.command in ("time-sync", "password"):
        return True
    if args.command == "ssh-keys":
        return bool(args.operation != "list")
    if args.command == "vcpus":
        return args.online is not None
    return False


async def _run_plan(
    engine: FleetEngine,
    args: argparse.Namespace,
    action: Action,
    question: str,
    run: Run,
    describe: Callable[[Any], str] | None = None,
    plan: ActionPlan | None = None,
) -> int:
    if plan is None:
        chosen = await poll_selected(engine, args)
        plan = engine.plan(action, [s.id for s in chosen])
    if (
        plan.eligible
        and command_policy(action.command).changes_guest
        and not await confirm(
            f"{question} {plural(len(plan.eligible))} ({names(plan.eligible)})?", args
        )
    ):
        return EXIT_FAILED
    results: list[ActionResult] = []
    if plan.eligible:
        with ActionBar(action.value, len(plan.eligible)) as bar:
            results = await run(plan.eligible, bar)
    if describe is not None and not args.json:
        results = [
            ActionResult(r.vm_id, r.ok, describe(r.value), r.error, r.elapsed_ms) if r.ok else r
            for r in results
        ]
    return print_results(action.value, results, plan.skipped, args.json)


# -- time-sync ------------------------------------------------------------------------------


def parse_time(text: str) -> int:
    try:
        return parse_when(text)
    except ValueError as exc:
        raise UsageError(f"--time {exc}") from None


async def cmd_time_sync(engine: FleetEngine, args: argparse.Namespace) -> int:
    when = parse_time(args.time) if args.time else None
    how = "from the host (its hardware clock)" if when is None else f"to {args.time}"
    return await _run_plan(
        engine,
        args,
        Action.TIME_SYNC,
        f"Set the clock {how} of",
        lambda ids, bar: engine.admin.time_sync(ids, when_ns=when, progress=bar),
        drift_text,
    )


# -- password -----------------------------------------------------------------------------


def read_password(args: argparse.Namespace) -> Secret:
    """Twice on the terminal, or the hash on stdin with --crypted."""
    if args.crypted:
        if sys.stdin.isatty():
            print("crypt(3) hash (one line): ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline().strip()
        if not line:
            raise UsageError("--crypted reads the hash from stdin; it was empty")
        if "\n" in line or ":" in line:
            raise UsageError("that is not a crypt(3) hash")
        return Secret(line)
    if not sys.stdin.isatty():
        raise UsageError(
            "the password is asked on a terminal (never on the command line); without one,"
            " give a crypt(3) hash on stdin with --crypted"
        )
    first = getpass.getpass(f"New password for {printable(args.user, 40)}: ")
    second = getpass.getpass("Again: ")
    if first != second:
        raise UsageError("the passwords differ; nothing was done")
    if not first:
        raise UsageError("an empty password is not set")
    return Secret(first)


async def cmd_password(engine: FleetEngine, args: argparse.Namespace) -> int:
    chosen = await poll_selected(engine, args)
    plan = engine.plan(Action.PASSWORD, [s.id for s in chosen])
    secret = await asyncio.to_thread(read_password, args) if plan.eligible else Secret("")
    what = "hash" if args.crypted else "password"
    return await _run_plan(
        engine,
        args,
        Action.PASSWORD,
        f"Set the {what} of {printable(args.user, 40)} on",
        lambda ids, bar: engine.admin.set_password(
            ids, args.user, secret, crypted=args.crypted, progress=bar
        ),
        plan=plan,
    )


# -- ssh-keys -----------------------------------------------------------------------------


def read_keys(source: str | None) -> list[str]:
    if source is None:
        raise UsageError("add and remove need a KEYFILE (- for stdin)")
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {printable(source, 200)}: {exc}") from None
    keys = read_key_file(text)
    if not keys:
        raise UsageError(f"{printable(source, 200)}: no public keys in it")
    return keys


async def cmd_ssh_keys(engine: FleetEngine, args: argparse.Namespace) -> int:
    if args.operation == "list":
        return await _ssh_list(engine, args)
    remove = args.operation == "remove"
    keys = read_keys(args.keyfile)
    action = Action.SSH_KEYS_REMOVE if remove else Action.SSH_KEYS_ADD
    chosen = await poll_selected(engine, args)
    plan = engine.plan(action, [s.id for s in chosen])
    if plan.eligible:
        # The diff first: what each VM has now, and what the change would do to it.
        current = await engine.admin.ssh_keys(plan.eligible, args.user)
        for r in current:
            if not r.ok:
                print(f"== {r.vm_id}: cannot read the keys: {printable(r.error, 300)}")
                continue
            change = key_diff(r.value, keys, remove=remove)
            lines = [f"+ {k}" for k in change.added] + [f"- {k}" for k in change.removed]
            print(f"== {printable(r.vm_id, 80)}" + ("" if lines else ": no change"))
            for line in lines:
                print(printable(line, 400))
    verb = "Remove" if remove else "Add"
    return await _run_plan(
        engine,
        args,
        action,
        f"{verb} {len(keys)} key{'s' if len(keys) != 1 else ''} for {printable(args.user, 40)} on",
        lambda ids, bar: engine.admin.ssh_keys_change(
            ids, args.user, keys, remove=remove, progress=bar
        ),
        keys_text,
        plan=plan,
    )


async def _ssh_list(engine: FleetEngine, args: argparse.Namespace) -> int:
    chosen = await poll_selected(engine, args)
    plan = engine.plan(Action.SSH_KEYS_LIST, [s.id for s in chosen])
    results = await engine.admin.ssh_keys(plan.eligible, args.user) if plan.eligible else []
    if args.json:
        return print_results(Action.SSH_KEYS_LIST.value, results, plan.skipped, True)
    for r in results:
        if r.ok:
            print(f"== {printable(r.vm_id, 80)} ({keys_text(r.value)})")
            for key in r.value:
                print(printable(key, 400))
        else:
            print(f"== {printable(r.vm_id, 80)} FAILED: {printable(r.error, 300)}")
    for vm_id, why in plan.skipped:
        print(f"== {printable(vm_id, 80)} skipped: {why}")
    ok = all(r.ok for r in results) and not plan.skipped and bool(results)
    return 0 if ok else EXIT_FAILED


# -- vcpus --------------------------------------------------------------------------------


async def cmd_vcpus(engine: FleetEngine, args: argparse.Namespace) -> int:
    if args.online is None:
        return await _run_plan(
            engine,
            args,
            Action.VCPUS,
            "",
            lambda ids, bar: engine.admin.vcpus(ids, progress=bar),
            vcpus_text,
        )
    if args.online < 1:
        raise UsageError("--online N: at least one vCPU stays online")
    return await _run_plan(
        engine,
        args,
        Action.VCPUS_SET,
        f"Set {args.online} vCPU{'s' if args.online != 1 else ''} online on",
        lambda ids, bar: engine.admin.set_vcpus(ids, args.online, progress=bar),
        vcpus_text,
    )
