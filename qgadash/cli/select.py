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

from qgadash.fleet.config import Config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import HYPERVISOR_DOWN, ActionResult, HypervisorStatus, VmSnapshot
from qgadash.fleet.report import action_document
from qgadash.fleet.sanitize import printable
from qgadash.fleet.signals import say

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Wrong use of the command line: exit status 2, no traceback."""


class SelectionUnreachable(Exception):
    """Nothing selected because hypervisors that could hold the selection are down:
    exit status 1 (a failure, not a usage error); str() names each and why."""


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
    if await ask_yes(question):
        return True
    say("qgadash: not confirmed; nothing was done.")
    return False


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
    shown = ", ".join(printable(i, 80) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def hypervisors_for(config: Config, args: argparse.Namespace) -> list[str]:
    """The hypervisors whose discovery can find a selected VM: a `--match` glob names
    its hypervisor before the `/` (an id has exactly one), and a discovered VM has its
    hypervisor's tags. ([[vm]] entries need no discovery.)"""
    names = []
    for hv in config.hypervisors:
        if args.match and not any(_may_match_hypervisor(g, hv.name) for g in args.match):
            continue
        if args.tag and not set(args.tag) & set(hv.tags):
            continue
        names.append(hv.name)
    return names


def _may_match_hypervisor(glob: str, hypervisor: str) -> bool:
    head, slash, _ = glob.partition("/")
    if not slash or "[" in head:
        return True  # `*web*`, or a character class that may hold the `/`: cannot tell
    return fnmatch.fnmatchcase(hypervisor, head)


async def poll_selection(
    engine: FleetEngine, args: argparse.Namespace
) -> tuple[list[VmSnapshot], list[HypervisorStatus]]:
    """Discover where the selection can be, then poll the selected VMs and no others (a
    silent agent elsewhere costs nothing); the fresh snapshots and the hypervisors
    consulted."""
    consulted = hypervisors_for(engine.config, args)
    await engine.discover(consulted)
    ids = [s.id for s in select(engine, args)]
    await engine.poll_vms(ids)
    chosen = [snap for vm_id in ids if (snap := engine.store.get(vm_id)) is not None]
    involved = {*consulted, *(s.ref.hypervisor for s in chosen)}
    statuses = sorted(
        (h for h in engine.store.hypervisors() if h.name in involved), key=lambda h: h.name
    )
    return chosen, statuses


def down(hypervisors: Sequence[HypervisorStatus]) -> list[HypervisorStatus]:
    return [h for h in hypervisors if h.state in HYPERVISOR_DOWN]


def hypervisor_line(hv: HypervisorStatus) -> str:
    why = f": {printable(hv.error, 300)}" if hv.error else ""
    return f"hypervisor {printable(hv.name, 60)}: {hv.state.value}{why}"


async def poll_selected(engine: FleetEngine, args: argparse.Namespace) -> list[VmSnapshot]:
    """The selected VMs, polled; nothing selected is a usage error, or a failure when a
    hypervisor that could hold the selection is down (it is named, with why)."""
    chosen, hypervisors = await poll_selection(engine, args)
    if not chosen:
        failed = down(hypervisors)
        if failed:
            raise SelectionUnreachable(
                "no VM matches the selection; " + "; ".join(hypervisor_line(h) for h in failed)
            )
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
        print(results_table(all_results))
    return EXIT_OK if all_results and all(r.ok for r in all_results) else EXIT_FAILED


def results_table(results: Sequence[ActionResult]) -> str:
    """`VM  OUTCOME  DETAIL`, a header and one row per VM (the VM column at least 32 wide,
    OUTCOME 8, as scripts that cut columns have always seen them)."""
    rows = [("VM", "OUTCOME", "DETAIL")]
    for r in results:
        outcome = "ok" if r.ok else ("UNKNOWN" if r.ok is None else "FAILED")
        detail = value_text(r.value) if r.ok else printable(r.error, 300)
        rows.append((printable(r.vm_id, 80), outcome, detail))
    width = max(32, *(len(row[0]) for row in rows))
    return "\n".join(
        f"{vm:<{width}} {outcome:<8} {detail}".rstrip() for vm, outcome, detail in rows
    )


def value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value} filesystem{'s' if value != 1 else ''}"
    if isinstance(value, str):
        return printable(value, 200)
    if isinstance(value, list) and all(isinstance(v, dict) and "path" in v for v in value):
        return printable("; ".join(_trim_text(v) for v in value), 300)  # fstrim
    return printable(json.dumps(value), 200)


def _trim_text(path: dict[str, Any]) -> str:
    if path.get("error"):
        return f"{path['path']}: {path['error']}"
    trimmed = path.get("trimmed")
    return f"{path['path']}: {trimmed} bytes trimmed" if trimmed is not None else str(path["path"])


def printable_block(text: str) -> str:
    """Multi-line guest output: each line made safe, newlines kept."""
    return (
        "\n".join(printable(line, 4000) for line in text.rstrip("\n").split("\n")) if text else ""
    )
