"""`status`: one poll of the selected VMs, as a table or JSON; hypervisors that could
not be reached are rows of their own (and make the exit status 1). The load comes from
the poll (qemu-ga 10.0+) or, for older Linux agents, /proc/loadavg (fleet/loadavg.py);
a VM without one says why."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence

from qgadash.cli.select import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    down,
    poll_selection,
)
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.loadavg import StatusLoad, status_loads
from qgadash.fleet.model import AgentState, HypervisorStatus, VmSnapshot
from qgadash.fleet.report import status_document
from qgadash.fleet.sanitize import printable


async def cmd_status(engine: FleetEngine, args: argparse.Namespace) -> int:
    chosen, hypervisors = await poll_selection(engine, args)
    failed = down(hypervisors)
    if not chosen and not failed:
        raise UsageError("no VM matches the selection")
    loads = await status_loads(engine, chosen, engine.settings.max_in_flight)
    if args.json:
        document = status_document(chosen, hypervisors, engine.store.notes(), loads)
        print(json.dumps(document, indent=2))
    else:
        print(status_table(chosen, hypervisors, loads))
    ok = all(s.agent is AgentState.OK for s in chosen) and not failed
    return EXIT_OK if ok else EXIT_FAILED


def status_table(
    snapshots: Sequence[VmSnapshot],
    hypervisors: Sequence[HypervisorStatus] = (),
    loads: Mapping[str, StatusLoad] | None = None,
) -> str:
    """One row per VM, then one per hypervisor that is down or has something to say.
    `loads`: each VM's load and why it has none (else the poll's load, no reason)."""
    header = ("VM", "AGENT", "OS", "HOSTNAME", "IPV4", "FS", "FULL", "LOAD", "RTT", "DETAIL")
    rows = [header]
    for s in snapshots:
        f = s.facts
        full = f.fullest_filesystem
        detail = printable(s.error, 120, "") if s.error else ""
        if s.lifecycle is not None:
            detail = s.lifecycle.label
        load = loads.get(s.id) if loads is not None else None
        load_value = load.load if load is not None else f.load
        if not detail and load is not None and load.note is not None:
            detail = "no load: " + printable(load.note, 200, "")
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
                f"{load_value.load1:.2f}" if load_value is not None else "-",
                f"{s.latency_ms:.1f}ms" if s.latency_ms is not None else "-",
                detail,
            )
        )
    for hv in hypervisors:
        if hv in down(hypervisors) or hv.error:
            rows.append(
                (
                    printable(hv.name, 38) + "/*",
                    hv.state.value,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    f"hypervisor: {printable(hv.error, 300)}" if hv.error else "hypervisor",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    return "\n".join(line.rstrip() for line in lines)
