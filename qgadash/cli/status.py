"""`status`: one poll, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from qgadash.cli.select import EXIT_FAILED, EXIT_OK, poll_selected
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, VmSnapshot
from qgadash.fleet.report import status_document
from qgadash.fleet.sanitize import printable


async def cmd_status(engine: FleetEngine, args: argparse.Namespace) -> int:
    chosen = await poll_selected(engine, args)
    if args.json:
        print(json.dumps(status_document(chosen, engine.store.hypervisors()), indent=2))
    else:
        print(status_table(chosen))
        for hv in engine.store.hypervisors():
            if hv.error:
                print(f"hypervisor {hv.name}: {hv.state.value}: {printable(hv.error, 300)}")
    return EXIT_OK if all(s.agent is AgentState.OK for s in chosen) else EXIT_FAILED


def status_table(snapshots: Sequence[VmSnapshot]) -> str:
    header = ("VM", "AGENT", "OS", "HOSTNAME", "IPV4", "FS", "FULL", "RTT", "DETAIL")
    rows = [header]
    for s in snapshots:
        f = s.facts
        full = f.fullest_filesystem
        rows.append(
            (
                printable(s.id, 40),
                s.agent.value,
                printable(f.os_label, 24, "-"),
                printable(f.hostname, 24, "-"),
                printable(f.first_ipv4, 39, "-"),
                s.freeze.value if s.freeze.value != "unknown" else "?",
                f"{full.used_fraction * 100:.0f}%"
                if full and full.used_fraction is not None
                else "-",
                f"{s.latency_ms:.1f}ms" if s.latency_ms is not None else "-",
                printable(s.error, 120, "") if s.error else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    return "\n".join(line.rstrip() for line in lines)
