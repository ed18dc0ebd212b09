"""What every subcommand shares: choosing VMs, asking before acting, printing one
result per VM, and the exit statuses (0 all done, 1 something failed, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import sys
from collections.abc import Sequence
from typing import Any

from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import ActionResult, VmSnapshot
from qgadash.fleet.report import action_document
from qgadash.fleet.sanitize import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Wrong use of the command line: exit status 2, no traceback."""


def select(engine: FleetEngine, args: argparse.Namespace) -> list[VmSnapshot]:
    chosen = []
    for snap in engine.store.snapshots():
        if args.match and not any(fnmatch.fnmatchcase(snap.id, g) for g in args.match):
            continue
        if args.tag and not set(args.tag) & set(snap.ref.tags):
            continue
        chosen.append(snap)
    return chosen


async def confirm(question: str, args: argparse.Namespace) -> bool:
    """Ask on the terminal (`--yes` answers for the operator; no terminal, no answer)."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} — refusing without a terminal; add --yes")
    return await ask_yes(question)


async def ask_yes(question: str) -> bool:
    """A y/N answer read without blocking the event loop, so a stop signal (Ctrl-C, a
    closed terminal, `kill`) at the prompt ends the command at once; EOF means no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not answer.done():
            answer.set_result(sys.stdin.readline())

    loop.add_reader(fd, readable)
    try:
        line = await answer
    finally:
        loop.remove_reader(fd)
    return line.strip().lower() in ("y", "yes")


def names(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


async def poll_selected(engine: FleetEngine, args: argparse.Namespace) -> list[VmSnapshot]:
    await engine.poll_once()
    chosen = select(engine, args)
    if not chosen:
        raise UsageError("no VM matches the selection")
    return chosen


def print_results(
    action: str, results: list[ActionResult], skipped: Sequence[tuple[str, str]], as_json: bool
) -> int:
    all_results = list(results) + [
        ActionResult(vm_id, False, None, f"skipped: {why}") for vm_id, why in skipped
    ]
    if as_json:
        print(json.dumps(action_document(action, all_results), indent=2))
    else:
        for r in all_results:
            mark = "ok" if r.ok else ("UNKNOWN" if r.ok is None else "FAILED")
            detail = value_text(r.value) if r.ok else printable(r.error, 300)
            print(f"{r.vm_id:<32} {mark:<8} {detail}")
    return EXIT_OK if all_results and all(r.ok for r in all_results) else EXIT_FAILED


def value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return printable(value, 200)
    return printable(json.dumps(value), 200)


def printable_block(text: str) -> str:
    """Multi-line guest output: each line made safe, newlines kept."""
    return (
        "\n".join(printable(line, 4000) for line in text.rstrip("\n").split("\n")) if text else ""
    )
