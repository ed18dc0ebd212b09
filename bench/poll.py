"""One fleet poll: qgadash's engine beside the raw floor client, in the same run.

    python bench/poll.py --sim 1000          # simulated agents, simulator in its own process
    python bench/poll.py --real 200          # real qemu-ga agents (dangerous commands blocked)

Both poll N agents over held sockets with the same three requests per VM (guest-info,
guest-fsfreeze-status, guest-network-get-interfaces). An agent serves one client at a
time, so each gets its own identical fleet of N (two simulators with the same seed, or
2N real agents), and their polls alternate round by round (engine, floor, floor,
engine, ...): on a shared machine whose speed drifts by tens of percent over a minute,
back-to-back phases measured the drift as much as the code. Reported: wall and CPU
seconds (this process only) per fleet poll, median and least of --rounds polls each,
after a warm-up poll that connects and syncs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.floor import FloorClient
from qgadash.fleet.config import Config, HypervisorConfig, Settings
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import SessionMode
from qgadash.fleet.polling import BENCH_COMMANDS, PollPlan
from qgadash.fleet.tuning import settle_garbage_collector


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


Poll = Callable[[], Awaitable[None]]


async def measure(polls: dict[str, Poll], rounds: int) -> dict[str, tuple[float, float, float]]:
    """Median wall, median CPU and least CPU of each poll, rounds interleaved (ABBA).

    The least CPU is the steadiest figure on a shared machine (others' work only adds)."""
    for poll in polls.values():
        await poll()  # warm-up: connect and sync
    walls: dict[str, list[float]] = {name: [] for name in polls}
    cpus: dict[str, list[float]] = {name: [] for name in polls}
    order = list(polls)
    for _ in range(rounds):
        for name in order:
            c0, w0 = time.process_time(), time.perf_counter()
            await polls[name]()
            walls[name].append(time.perf_counter() - w0)
            cpus[name].append(time.process_time() - c0)
        order.reverse()
    return {
        name: (statistics.median(walls[name]), statistics.median(cpus[name]), min(cpus[name]))
        for name in polls
    }


async def bench(
    engine_sockets: list[Path], floor_sockets: list[Path], rounds: int, max_in_flight: int
) -> dict[str, tuple[float, float, float]]:
    directory = engine_sockets[0].parent
    settings = Settings(timeout=10.0, max_in_flight=max_in_flight, poll_interval=3600)
    config = Config(
        None,
        settings,
        (HypervisorConfig("bench", agents=(f"{directory}/*.sock",), session=SessionMode.HELD),),
    )
    plan = PollPlan(fast=BENCH_COMMANDS, slow=BENCH_COMMANDS, slow_every=1)
    engine = FleetEngine(config, poll_plan=plan)
    await engine.discover()
    settle_garbage_collector()  # what engine.start() does once the inventory exists
    ids = engine.store.ids()
    assert len(ids) == len(engine_sockets), (len(ids), len(engine_sockets))

    async def engine_poll() -> None:
        await asyncio.gather(*(engine.poll_vm(i) for i in ids))

    # The engine's own in-flight cap; the floor gets one of the same size.
    sem = asyncio.Semaphore(max_in_flight)

    async def connect(path: Path) -> FloorClient:
        async with sem:
            return await FloorClient.connect(path)

    clients = await asyncio.gather(*(connect(p) for p in floor_sockets))

    async def floor_poll() -> None:
        async def one(c: FloorClient) -> None:
            async with sem:
                await c.poll()

        await asyncio.gather(*(one(c) for c in clients))

    results = await measure({"qgadash": engine_poll, "floor": floor_poll}, rounds)
    bad = [s for s in engine.store.snapshots() if s.agent.value != "ok"]
    assert not bad, f"{len(bad)} VMs not ok, e.g. {bad[0].error}"
    await engine.stop()
    for c in clients:
        c.close()
    return results


def start_sim(
    count: int, directory: Path, procs: int, faults: dict[str, int] | None = None
) -> subprocess.Popen[str]:
    """`python -m qgadash.sim` in its own processes; returns once it prints `ready`."""
    cmd = [sys.executable, "-m", "qgadash.sim", "--count", str(count), "--dir", str(directory)]
    cmd += ["--procs", str(procs)]
    for fault, number in (faults or {}).items():
        cmd += ["--fault", f"{fault}={number}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sim", type=int, help="number of simulated agents")
    parser.add_argument("--real", type=int, help="number of real qemu-ga agents")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-in-flight", type=int, default=256)
    args = parser.parse_args()
    raise_nofile()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="qgab-") as tmp:
        engine_dir, floor_dir = Path(tmp) / "engine", Path(tmp) / "floor"
        if args.sim:
            procs = 1 if args.sim <= 5000 else 2
            sims = [start_sim(args.sim, d, procs) for d in (engine_dir, floor_dir)]
            try:
                label = f"{args.sim} simulated agents"
                results = asyncio.run(
                    bench(
                        sorted(engine_dir.glob("*.sock")),
                        sorted(floor_dir.glob("*.sock")),
                        args.rounds,
                        args.max_in_flight,
                    )
                )
            finally:
                for sim in sims:
                    sim.terminate()
                    sim.wait()
        elif args.real:
            from tests.integration.realagent import start_real_agents

            agents = []
            try:
                for d in (engine_dir, floor_dir):
                    agents.append(start_real_agents(d, args.real))
                label = f"{args.real} real qemu-ga agents"
                results = asyncio.run(
                    bench(
                        [a.socket for a in agents[0]],
                        [a.socket for a in agents[1]],
                        args.rounds,
                        args.max_in_flight,
                    )
                )
            finally:
                for group in agents:
                    for a in group:
                        a.stop()
        else:
            parser.error("give --sim N or --real N")
    _, floor_cpu, floor_least = results["floor"]
    print(f"one fleet poll of {label}, each on its own fleet ({args.rounds} rounds, interleaved):")
    for name, (wall, cpu, least) in results.items():
        print(
            f"  {name:<8} wall {wall * 1000:7.1f} ms  cpu median {cpu * 1000:7.1f} ms "
            f"({cpu / floor_cpu:.2f}x floor)  cpu least {least * 1000:7.1f} ms "
            f"({least / floor_least:.2f}x floor)"
        )


if __name__ == "__main__":
    main()
