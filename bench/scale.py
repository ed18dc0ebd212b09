"""How far one qgadash process goes: thousands of agents at a 5 s poll interval.

    python bench/scale.py --sizes 1000 5000 10000 --duration 30
    python bench/scale.py --sizes 5000 --silent 0.10 --garbage 0.02   # fairness under faults
    python bench/scale.py --sizes 1000 --stats   # the CPU% and DISK I/O columns on

The simulator runs in its own processes (spread so none passes the 20,000-file limit).
The engine polls every VM on its interval with held sessions (one socket per VM in this
process). After a warm-up of one interval, for --duration seconds it measures: CPU % of
one core for this process alone, RSS and RSS per VM, p50/p99 request latency (one
poll's pipelined batch), event-loop lag (p99 of a 10 ms heartbeat's delay), and the
staleness of healthy VMs (p99 time between two successful polls of one VM). It also
times one full poll cycle done as a burst (every VM at once, under max_in_flight).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from bench.poll import machine, raise_nofile, start_sim
from qgadash.fleet.config import Config, HypervisorConfig, Settings
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, SessionMode
from qgadash.fleet.tuning import settle_garbage_collector


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, ...), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return status_mb("VmRSS")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class MeasuredEngine(FleetEngine):
    """Records when each VM's poll came back ok, for staleness."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ok_times: dict[str, list[float]] = {}
        self.latencies: list[float] = []
        self.recording = False

    async def poll_vm(self, vm_id: str) -> None:
        await super().poll_vm(vm_id)
        if not self.recording:
            return
        snap = self.store.get(vm_id)
        if snap is not None and snap.agent is AgentState.OK:
            self.ok_times.setdefault(vm_id, []).append(time.monotonic())
            if snap.latency_ms is not None:
                self.latencies.append(snap.latency_ms)


async def heartbeat(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + 0.010
        await asyncio.sleep(0.010)
        lags.append(max(0.0, loop.time() - expected))


async def run_size(
    directory: Path,
    count: int,
    duration: float,
    interval: float,
    timeout: float,
    session: SessionMode = SessionMode.HELD,
    stats: bool = False,
) -> dict[str, float]:
    settings = Settings(poll_interval=interval, timeout=timeout, max_in_flight=256)
    config = Config(
        None,
        settings,
        (HypervisorConfig("sim", agents=(f"{directory}/*.sock",), session=session),),
    )
    engine = MeasuredEngine(config, after_discovery=settle_garbage_collector)
    if stats:  # what the dashboard's optional CPU% and DISK I/O columns add to every poll
        engine.poll_stats(cpu=True, disks=True)
    base_rss = rss_mb()
    await engine.discover()
    assert len(engine.store) == count, (len(engine.store), count)
    # One full cycle as a burst: connect + sync + poll every VM.
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.poll_vm(i) for i in engine.store.ids()))
    first_cycle = time.perf_counter() - t0
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.poll_vm(i) for i in engine.store.ids()))
    burst_cycle = time.perf_counter() - t0
    await engine.start()
    await asyncio.sleep(interval)  # warm-up: the staggered loops settle
    lags: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.get_running_loop().create_task(heartbeat(lags, stop))
    engine.recording = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(duration)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    engine.recording = False
    stop.set()
    await beat
    rss = rss_mb()
    healthy = [s.id for s in engine.store.snapshots() if s.agent is AgentState.OK]
    gaps: list[float] = []
    for vm_id in healthy:
        times = engine.ok_times.get(vm_id, [])
        gaps.extend(b - a for a, b in itertools.pairwise(times))
    polled = sum(len(engine.ok_times.get(i, [])) for i in healthy)
    await engine.stop()
    return {
        "vms": count,
        "healthy": len(healthy),
        "first_cycle_s": first_cycle,
        "burst_cycle_s": burst_cycle,
        "cpu_pct": 100 * cpu / wall,
        "rss_mb": rss,
        "rss_kb_per_vm": (rss - base_rss) * 1024 / count,
        "lat_p50_ms": percentile(engine.latencies, 0.50),
        "lat_p99_ms": percentile(engine.latencies, 0.99),
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "stale_p99_s": percentile(gaps, 0.99),
        "polls_per_s": polled / wall,
        "cpu_us_per_poll": cpu / max(1, polled) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--session",
        choices=[m.value for m in SessionMode],
        default=SessionMode.HELD.value,
        help="held: one connection kept per VM; per-poll: connect, sync, poll, close",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="poll guest-get-cpustats and guest-get-diskstats too (the optional columns on)",
    )
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument(
        "--silent", type=float, default=0.0, help="fraction of agents that never answer"
    )
    parser.add_argument(
        "--garbage", type=float, default=0.0, help="fraction of agents that send garbage"
    )
    args = parser.parse_args()
    raise_nofile()
    print(f"machine: {machine()}")
    print(
        f"interval {args.interval:g} s, timeout {args.timeout:g} s, duration {args.duration:g} s, "
        f"silent {args.silent:.0%}, garbage {args.garbage:.0%}, sessions {args.session}, "
        f"cpu/disk stats {'on' if args.stats else 'off'}"
    )
    header = (
        "VMs",
        "first cycle",
        "burst cycle",
        "CPU %",
        "RSS MB",
        "KB/VM",
        "lat p50",
        "lat p99",
        "lag p99",
        "stale p99",
        "polls/s",
        "µs CPU/poll",
    )
    print(" | ".join(header))
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="qgas-") as tmp:
            faults = {"silent": int(size * args.silent), "garbage": int(size * args.garbage)}
            sim = start_sim(size, Path(tmp), max(1, math.ceil(size / 4000)), faults)
            try:
                r = asyncio.run(
                    run_size(
                        Path(tmp),
                        size,
                        args.duration,
                        args.interval,
                        args.timeout,
                        SessionMode(args.session),
                        args.stats,
                    )
                )
            finally:
                sim.terminate()
                sim.wait()
        cells = [
            f"{size}",
            f"{r['first_cycle_s']:.2f} s",
            f"{r['burst_cycle_s']:.2f} s",
            f"{r['cpu_pct']:.1f}",
            f"{r['rss_mb']:.0f}",
            f"{r['rss_kb_per_vm']:.1f}",
            f"{r['lat_p50_ms']:.1f} ms",
            f"{r['lat_p99_ms']:.1f} ms",
            f"{r['lag_p99_ms']:.1f} ms",
            f"{r['stale_p99_s']:.2f} s",
            f"{r['polls_per_s']:.0f}",
            f"{r['cpu_us_per_poll']:.0f}",
        ]
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
