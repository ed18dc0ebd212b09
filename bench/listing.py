"""What a hostile 650,000-entry directory listing costs the process (issue 13).

    python bench/listing.py --entries 650000 --others 200

A guest that does not run our listing script can answer `guest-exec-status` with as
much output as the reply cap lets through. Before the listing was capped and parsed
off the loop, 650,000 entries stalled the event loop for 45 s at 1.3 GB RSS and every
other VM's polls and thaw timers stopped. This measures, in this process (the engine,
as the dashboard and CLI run it):

- peak RSS (VmHWM) before and after the listing, and its growth;
- the event loop's lag while the listing runs: a 10 ms heartbeat's delay, p99 and max;
- how many of the other VMs (simulated, in their own processes, polled every second)
  were polled while the listing ran, and the listing's wall time and entries kept.

The hostile agent runs in a child process (this script with --serve), so its own work
(building a 30 MB reply) is not counted. Two runs: the default reply cap (16 MiB:
the reply is refused, the session says why) and a cap raised to 64 MiB (the reply is
read whole and the parser keeps 5,000 entries). Targets: RSS growth under 100 MB and lag
under 100 ms in both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.poll import machine, raise_nofile, start_sim
from bench.scale import heartbeat, percentile, status_mb
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from tests.integration.fakeagent import fake_agent, supported


def peak_rss_mb() -> float:
    """VmHWM: the most this process has ever held resident (peaks between samples too)."""
    return status_mb("VmHWM")


async def serve(socket: Path, entries: int) -> None:
    """The hostile agent: every guest-exec-status after the first says exited, with
    `entries` NUL-terminated records as output."""
    names = b"".join(f"81a4 1 1700000000 file-{i:07d}\0".encode() for i in range(entries))
    out = base64.b64encode(names).decode()
    polls = 0

    def exec_status(_args: dict[str, Any]) -> dict[str, Any]:
        nonlocal polls
        polls += 1
        if polls % 2:
            return {"exited": False}
        return {"exited": True, "exitcode": 0, "out-data": out}

    handlers = {
        "guest-info": lambda a: supported(["guest-exec", "guest-exec-status", "guest-ping"]),
        "guest-ping": lambda a: {},
        "guest-exec": lambda a: {"pid": 42},
        "guest-exec-status": exec_status,
    }
    async with fake_agent(socket, handlers):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def measure(
    directory: Path, socket: Path, sim_dir: Path, cap: int, entries: int
) -> dict[str, Any]:
    hosts = directory / f"hosts-{cap}.toml"
    hosts.write_text(
        "[settings]\npoll_interval = 1.0\ntimeout = 10.0\naction_timeout = 60.0\n"
        f"max_reply_bytes = {cap}\n"
        f'[[vm]]\nname = "big"\nagent = {json.dumps(str(socket))}\n'
        f'[[hypervisor]]\nname = "sim"\nagents = ["{sim_dir}/*.sock"]\n'
    )
    engine = FleetEngine(load_config(hosts))
    lags: list[float] = []
    stop = asyncio.Event()
    result: dict[str, Any] = {"cap_mib": cap // (1024 * 1024)}
    try:
        await engine.start()
        await engine.poll_vm("local/big")
        await asyncio.sleep(2.0)  # the other VMs connected and polling
        rss0 = peak_rss_mb()
        before = {s.id: s.last_poll for s in engine.store.snapshots() if s.id != "local/big"}
        beat = asyncio.create_task(heartbeat(lags, stop))
        t0 = time.perf_counter()
        try:
            listing = await engine.files.list_dir("local/big", "/huge")
            result["kept"] = len(listing.entries)
            result["more"] = listing.more
        except Exception as exc:  # the refused reply: what the operator is told
            result["error"] = f"{type(exc).__name__}: {exc}"[:120]
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        after = {s.id: s.last_poll for s in engine.store.snapshots() if s.id != "local/big"}
        stop.set()
        await beat
        result["rss_before_mb"] = round(rss0)
        result["rss_growth_mb"] = round(peak_rss_mb() - rss0)
        result["lag_p99_ms"] = round(percentile(lags, 0.99) * 1000, 1)
        result["lag_max_ms"] = round(max(lags, default=0.0) * 1000, 1)
        # Every other VM is polled each second: all of them should show a new poll.
        result["others_polled_meanwhile"] = sum(after[i] != before.get(i) for i in after)
    finally:
        await engine.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=650_000)
    parser.add_argument("--others", type=int, default=200, help="simulated VMs polled meanwhile")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.entries))
        return
    raise_nofile()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        socket = directory / "big.sock"
        agent = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(socket), "--entries", str(args.entries)],
            stdout=subprocess.PIPE,
            text=True,
        )
        sim = start_sim(args.others, directory / "sim", 1)
        try:
            assert agent.stdout is not None
            if "ready" not in agent.stdout.readline():
                raise SystemExit("the hostile agent did not start")
            # Each cap in a fresh process would be cleaner for VmHWM; the default cap
            # runs first, so the raised cap's growth is measured above its peak.
            for cap in (16 * 1024 * 1024, 64 * 1024 * 1024):
                row = asyncio.run(measure(directory, socket, directory / "sim", cap, args.entries))
                print(json.dumps({"entries": args.entries, "others": args.others, **row}))
        finally:
            for proc in (agent, sim):
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
