"""What `qgadash metrics` costs: 10,000 simulated VMs behind one exporter.

    python bench/metrics.py --vms 10000 --duration 90 --rounds 2

The simulator runs in its own processes; this process runs the engine (held sessions,
5 s interval, the default poll plan) and the exporter's HTTP server, exactly as
`qgadash metrics` does. Scrapes come from another process (so the client's own CPU is
not counted), as Prometheus sends them: OpenMetrics, gzip.

- extra CPU: phases of --duration seconds alternate, engine alone (A) and engine
  scraped every --scrape-interval seconds (B), --rounds times (A B A B ...); the extra
  CPU is B's CPU minus A's, in % of one core (CPU time of this process only).
- scrape time: the scrapes of the B phases, while the engine polls: the scraper's wall
  time from request to the last byte (p50, p99, max), and the exporter's own render time
  (its qgadash_scrape_render_seconds); the event loop's lag (p99 of a 10 ms heartbeat's
  delay) in A and in B phases.
- failed scrapes: scrapes not answered within the scraper's 30 s timeout.
- costs alone, polling stopped, --quiet times (least of them): every VM's snapshot new
  (as after a poll round at this size), the CPU the loop spends re-rendering the changed
  VMs' lines (`render_all_cpu_s`, paid once per poll interval when every VM changes),
  then one scrape's CPU and wall time in the HTTP thread (joining, encoding, gzip); the
  exporter's CPU is the first over the poll interval plus the second over the scrape
  interval (`exporter_cpu_pct`).
- size: the scrape's bytes, gzipped and as text, and its samples.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.poll import machine, raise_nofile, start_sim
from bench.scale import heartbeat, percentile, rss_mb
from qgadash.exporter import MetricsServer
from qgadash.fleet.config import Config, HypervisorConfig, Settings
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, SessionMode
from qgadash.fleet.tuning import settle_garbage_collector

ACCEPT = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


SCRAPE_TIMEOUT = 30.0


def scrape_once(url: str) -> dict[str, float]:
    request = urllib.request.Request(url, headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT) as response:
            body = response.read()
    except OSError:  # timed out (or refused): a failed scrape
        return {"wall": time.perf_counter() - started, "failed": 1}
    wall = time.perf_counter() - started
    text = gzip.decompress(body)
    samples = sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))
    return {
        "wall": wall,
        "failed": 0,
        "gz_bytes": len(body),
        "bytes": len(text),
        "samples": samples,
    }


def scraper(url: str, every: float, count: int) -> None:
    """The scraping process: `count` scrapes `every` seconds apart, one JSON line each."""
    next_at = time.monotonic()
    for _ in range(count):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every
        print(json.dumps(scrape_once(url)), flush=True)


def start_scraper(url: str, every: float, count: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--scraper", url, "--every", str(every)]
    return subprocess.Popen([*cmd, "--count", str(count)], stdout=subprocess.PIPE, text=True)


def results_of(process: subprocess.Popen[str]) -> list[dict[str, float]]:
    out, _ = process.communicate()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def phase(
    seconds: float, scrape: tuple[str, float] | None
) -> tuple[float, list[float], list[dict[str, float]]]:
    """CPU % of one core of this process over `seconds`, the loop's lag samples, and the
    scrapes (none without `scrape`)."""
    client = None
    if scrape is not None:
        url, every = scrape
        client = start_scraper(url, every, max(1, int(seconds // every)))
    lags: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.get_running_loop().create_task(heartbeat(lags, stop))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stop.set()
    await beat
    scrapes = await asyncio.to_thread(results_of, client) if client else []
    return 100 * cpu / wall, lags, scrapes


async def run(args: argparse.Namespace, directory: Path) -> dict[str, float]:
    settings = Settings(poll_interval=args.interval, timeout=3.0, max_in_flight=256)
    hv = HypervisorConfig("sim", agents=(f"{directory}/*.sock",), session=SessionMode.HELD)
    # As `qgadash metrics` runs it (cli/lifecycle.py): the collector settled after discovery.
    engine = FleetEngine(Config(None, settings, (hv,)), after_discovery=settle_garbage_collector)
    server = MetricsServer(engine.store, "127.0.0.1", 0)
    await server.start()
    await engine.start()
    give_up = time.monotonic() + 120
    while sum(s.agent is AgentState.OK for s in engine.store.snapshots()) < args.vms * 0.99:
        if time.monotonic() > give_up:
            raise SystemExit("the fleet did not come up")
        await asyncio.sleep(1)
    await asyncio.sleep(args.interval)  # warm-up: the staggered loops settle
    rss_before = rss_mb()
    alone: list[float] = []
    scraped: list[float] = []
    lags_alone: list[float] = []
    lags_scraped: list[float] = []
    scrapes: list[dict[str, float]] = []
    for _ in range(args.rounds):
        cpu, lags, _none = await phase(args.duration, None)
        alone.append(cpu)
        lags_alone += lags
        cpu, lags, done = await phase(args.duration, (server.url, args.scrape_interval))
        scraped.append(cpu)
        lags_scraped += lags
        scrapes += done
    quiet = await quiet_costs(engine, server, args.quiet)
    renders = server.metrics.render.collect()[0].samples
    render_sum = next(s.value for s in renders if s.name.endswith("_sum"))
    render_count = next(s.value for s in renders if s.name.endswith("_count"))
    rss_after = rss_mb()
    await server.stop()
    walls = [s["wall"] for s in scrapes]
    answered = [s for s in scrapes if not s["failed"]]
    render_all = min(render for render, _cpu, _wall in quiet)
    scrape_cpu = min(cpu for _render, cpu, _wall in quiet)
    return {
        "cpu_alone_pct": sum(alone) / len(alone),
        "cpu_scraped_pct": sum(scraped) / len(scraped),
        "extra_cpu_pct": sum(scraped) / len(scraped) - sum(alone) / len(alone),
        "scrape_p50_s": percentile(walls, 0.50),
        "scrape_p99_s": percentile(walls, 0.99),
        "scrape_max_s": max(walls),
        "render_mean_s": render_sum / max(1, render_count),
        "render_all_cpu_s": render_all,
        "scrape_cpu_s": scrape_cpu,
        "scrape_wall_s": min(wall for _render, _cpu, wall in quiet),
        "exporter_cpu_pct": 100 * (render_all / args.interval + scrape_cpu / args.scrape_interval),
        "scrapes": len(walls),
        "failed_scrapes": len(walls) - len(answered),
        "lag_p99_alone_ms": percentile(lags_alone, 0.99) * 1000,
        "lag_p99_scraped_ms": percentile(lags_scraped, 0.99) * 1000,
        "samples": answered[-1]["samples"] if answered else 0,
        "mb_text": answered[-1]["bytes"] / 1e6 if answered else 0.0,
        "mb_gzip": answered[-1]["gz_bytes"] / 1e6 if answered else 0.0,
        "rss_mb": rss_after,
        "rss_growth_mb": rss_after - rss_before,
    }


async def quiet_costs(
    engine: FleetEngine, server: MetricsServer, count: int
) -> list[tuple[float, float, float]]:
    """With polling stopped and every VM changed (a new snapshot each, as a poll round
    leaves them): the loop's CPU to re-render them all, then one scrape's CPU and wall
    time in a thread, as the HTTP server builds it."""
    await engine.stop()
    runs = []
    for round_number in range(count + 1):
        for snap in engine.store.snapshots():
            engine.store.put(dataclasses.replace(snap, last_poll=(snap.last_poll or 0) + 5))
        cpu0 = time.process_time()
        server.follower.drain()
        while server.follower.behind:
            server.follower.drain()
        render = time.process_time() - cpu0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.to_thread(server.bodies.body, True, True)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if round_number:  # the first one after the burst may find some VMs unchanged
            runs.append((render, cpu, wall))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval (s)")
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="A/B phase pairs")
    parser.add_argument("--quiet", type=int, default=5, help="scrapes with polling stopped")
    parser.add_argument("--scraper", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scraper:
        scraper(args.scraper, args.every, args.count)
        return
    raise_nofile()
    print(f"machine: {machine()}")
    print(
        f"{args.vms} VMs, held sessions, poll every {args.interval:g} s; scraped every "
        f"{args.scrape_interval:g} s; {args.rounds} x ({args.duration:g} s alone, "
        f"{args.duration:g} s scraped)"
    )
    with tempfile.TemporaryDirectory(prefix="qgam-") as tmp:
        sim = start_sim(args.vms, Path(tmp), max(1, math.ceil(args.vms / 4000)))
        try:
            result = asyncio.run(run(args, Path(tmp)))
        finally:
            sim.terminate()
            sim.wait()
    for key, value in result.items():
        print(f"{key:16} {value:,.3f}" if isinstance(value, float) else f"{key:16} {value:,}")


if __name__ == "__main__":
    main()
