"""One fleet poll of real qemu-ga agents over SSH beside the same poll on local sockets,
plus the per-call cost of the libvirt path beside a fresh `virsh` per call.

    python bench/ssh_poll.py                 # 200 agents, 5 rounds, libvirt part too
    python bench/ssh_poll.py --agents 500 --no-libvirt
    python bench/ssh_poll.py --libvirt-poll-only --libvirt-guests 4 --rounds 10

Each poll sends guest-info, guest-fsfreeze-status and guest-network-get-interfaces to
every agent (one `call_many` per VM, all VMs concurrently under a 256 in-flight limit),
through the transport classes (LocalHypervisor, SshHypervisor over a real sshd on
127.0.0.1). Held sessions: connected and synced once, then polled. Per-poll sessions:
connect, sync, poll, close each time (Proxmox's rule). Reported: medians over --rounds
polls after a warm-up poll; wall seconds and CPU seconds of this process
(time.process_time), and for SSH the CPU of the sshd serving the connection.

The libvirt part needs root, libvirtd and QEMU: it boots one TCG guest from the
tests/guests image under a libvirtd started as tests/integration/libvirtd.py does.
`libvirt_poll` then boots --libvirt-guests guests and compares one poll of all of them
(the engine's full poll plan, every VM concurrently) through libvirt's own verbs (one
`guestinfo` and one `domtime` per guest: LibvirtCaller.call_many) with the same commands
sent one by one through `qemu-agent-command`, the path before issue 20 (it taints the
bench's domains). Wall time per fleet poll and per guest, CPU of this process and of its
virsh children, and the load average while it ran (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.poll import machine
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentError
from qgadash.transport.local import LocalHypervisor
from qgadash.transport.ssh import SshHypervisor
from tests.integration.realagent import start_real_agents
from tests.integration.sshd import SshServer, descendants, generate_key

POLL = [
    ("guest-info", None),
    ("guest-fsfreeze-status", None),
    ("guest-network-get-interfaces", None),
]
IN_FLIGHT = 256
TIMEOUT = 30.0


def cpu_of(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


async def fleet_poll(callers: list[AgentCaller]) -> None:
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def one(caller: AgentCaller) -> None:
        async with limit:
            results = await caller.call_many(POLL, timeout=TIMEOUT)
        for result in results:
            if isinstance(result, Exception):
                raise result

    await asyncio.gather(*(one(c) for c in callers))


async def measure(
    poll: Callable[[], Awaitable[None]], rounds: int, server_pids: Callable[[], list[int]]
) -> dict[str, float]:
    await poll()  # warm-up
    walls, cpus, server = [], [], []
    for _ in range(rounds):
        pids = server_pids()
        s0 = cpu_of(pids)
        c0, w0 = time.process_time(), time.perf_counter()
        await poll()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        server.append(cpu_of(pids) - s0)
    return {
        "wall": statistics.median(walls),
        "wall_min": min(walls),
        "cpu": statistics.median(cpus),
        "server_cpu": statistics.median(server),
    }


async def transport_rows(
    hv: Any, addresses: list[str], rounds: int, server_pids: Any
) -> dict[str, dict[str, float]]:
    endpoints = [hv.endpoint(a) for a in addresses]
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def connect(endpoint: Any) -> AgentCaller:
        async with limit:
            caller: AgentCaller = await endpoint.connect(TIMEOUT)
            return caller

    callers = list(await asyncio.gather(*(connect(e) for e in endpoints)))

    async def held() -> None:
        await fleet_poll(callers)

    rows = {"held": await measure(held, rounds, server_pids)}
    for caller in callers:
        await caller.close()

    async def per_poll() -> None:
        fresh = list(await asyncio.gather(*(connect(e) for e in endpoints)))
        await fleet_poll(fresh)
        for caller in fresh:
            await caller.close()

    rows["per-poll"] = await measure(per_poll, rounds, server_pids)
    return rows


async def ssh_vs_local(count: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="qgadash-bench-", dir="/tmp"))
    agents = start_real_agents(work / "agents", count)
    key = work / "id_ed25519"
    server = SshServer(work / "sshd", key, generate_key(key))
    server.start()
    local = LocalHypervisor("local")
    remote = SshHypervisor("hv1", server.target())
    addresses = [str(a.socket) for a in agents]
    try:
        local_rows = await transport_rows(local, addresses, rounds, lambda: [])
        ssh_rows = await transport_rows(remote, addresses, rounds, lambda: descendants(server.pid))
        assert server.client_connections() == 1
    finally:
        await remote.close()
        server.stop()
        for agent in agents:
            agent.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n## Fleet poll, {count} real qemu-ga agents x 3 requests (median of {rounds})\n")
    print(
        "| transport | sessions | wall ms (median) | wall ms (best) | CPU ms (qgadash) "
        "| CPU ms (sshd) |"
    )
    print("|---|---|---|---|---|---|")
    for name, rows in (("local unix sockets", local_rows), ("SSH, 1 connection", ssh_rows)):
        for mode, row in rows.items():
            server_cpu = f"{row['server_cpu'] * 1e3:.0f}" if name.startswith("SSH") else "-"
            print(
                f"| {name} | {mode} | {row['wall'] * 1e3:.0f} | {row['wall_min'] * 1e3:.0f} "
                f"| {row['cpu'] * 1e3:.0f} "
                f"| {server_cpu} |"
            )


async def libvirt_latency(calls: int) -> None:
    from qgadash.transport.libvirt import LibvirtHypervisor
    from tests.guests.image import ensure_image
    from tests.integration.libvirtd import Libvirtd, virsh

    work = Path(tempfile.mkdtemp(prefix="qgadash-bench-lv-", dir="/tmp"))
    daemon = Libvirtd(work)
    daemon.start()
    try:
        image = ensure_image()
        name = daemon.start_guest(image.vmlinux or image.bzimage, image.initrd, "bench-lv")
        daemon.wait_booted(name)
        hv = LibvirtHypervisor("lab")
        try:
            found = {a.name: a.address for a in await hv.discover([])}
            caller = await hv.endpoint(found[name]).connect(5)
            await caller.call("guest-ping", timeout=5)
            ours = []
            for _ in range(calls):
                t0 = time.perf_counter()
                await caller.call("guest-ping", timeout=5)
                ours.append(time.perf_counter() - t0)
            poll = []
            for _ in range(max(10, calls // 10)):
                t0 = time.perf_counter()
                await caller.call_many(POLL, timeout=5)
                poll.append(time.perf_counter() - t0)
        finally:
            await hv.close()
        fresh = []
        for _ in range(max(10, calls // 5)):
            t0 = time.perf_counter()
            virsh("qemu-agent-command", name, '{"execute":"guest-ping"}', "--timeout", "5")
            fresh.append(time.perf_counter() - t0)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n## libvirt: one agent call (guest-ping) to a TCG guest, local libvirtd\n")
    print("| path | median ms | p90 ms |")
    print("|---|---|---|")
    for label, samples in (
        ("long-lived virsh (LibvirtHypervisor)", ours),
        ("fresh `virsh qemu-agent-command` process", fresh),
    ):
        samples.sort()
        print(
            f"| {label} | {statistics.median(samples) * 1e3:.2f} "
            f"| {samples[int(len(samples) * 0.9)] * 1e3:.2f} |"
        )
    print(
        f"\nA 3-request status poll of that guest through LibvirtHypervisor: "
        f"{statistics.median(poll) * 1e3:.1f} ms (median)."
    )


def _children_cpu() -> float:
    """CPU seconds of this process's live child processes (the virsh shells)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def libvirt_poll(guests: int, rounds: int) -> None:
    from qgadash.fleet.polling import FAST_COMMANDS, SLOW_COMMANDS
    from qgadash.transport.libvirt import LibvirtCaller, LibvirtHypervisor
    from tests.guests.image import ensure_image
    from tests.integration.libvirtd import Libvirtd

    plan = [(name, None) for name in (*SLOW_COMMANDS, *FAST_COMMANDS)]
    work = Path(tempfile.mkdtemp(prefix="qgadash-bench-lv-", dir="/tmp"))
    daemon = Libvirtd(work)
    daemon.start()
    rows: dict[str, list[tuple[float, float, list[float]]]] = {"verbs": [], "raw": []}
    loads: list[float] = []
    try:
        image = ensure_image()
        kernel = image.vmlinux or image.bzimage
        names = [
            daemon.start_guest(kernel, image.initrd, f"bench-lv{i}", ip=f"10.0.2.{50 + i}/24")
            for i in range(guests)
        ]
        for name in names:
            daemon.wait_booted(name)
        hv = LibvirtHypervisor("lab", max_shells=max(4, guests))
        try:
            found = {a.name: a.address for a in await hv.discover([])}
            callers = []
            for name in names:
                caller = await hv.endpoint(found[name]).connect(TIMEOUT)
                assert isinstance(caller, LibvirtCaller)
                callers.append(caller)

            async def verbs(caller: LibvirtCaller) -> None:
                await caller.call_many(plan, timeout=TIMEOUT)

            async def raw(caller: LibvirtCaller) -> None:
                for name, args in plan:
                    # A command the agent refuses costs its round trip all the same.
                    with contextlib.suppress(AgentError):
                        await caller.call_raw(name, args, int(TIMEOUT))

            async def timed(kind: str, one: Callable[[LibvirtCaller], Awaitable[None]]) -> None:
                per_guest: list[float] = []

                async def each(caller: LibvirtCaller) -> None:
                    t0 = time.perf_counter()
                    await one(caller)
                    per_guest.append(time.perf_counter() - t0)

                cpu0, kids0 = time.process_time(), _children_cpu()
                t0 = time.perf_counter()
                await asyncio.gather(*(each(c) for c in callers))
                wall = time.perf_counter() - t0
                cpu = time.process_time() - cpu0 + _children_cpu() - kids0
                rows[kind].append((wall, cpu, per_guest))

            for kind, one in (("verbs", verbs), ("raw", raw)):  # warm-up
                await timed(kind, one)
                rows[kind].clear()
            for _ in range(rounds):
                loads.append(os.getloadavg()[0])
                for kind, one in (("verbs", verbs), ("raw", raw)):  # interleaved
                    await timed(kind, one)
        finally:
            await hv.close()
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n## libvirt: one poll of {guests} TCG guests ({len(plan)} commands each), "
        f"medians of {rounds} rounds\n"
    )
    print(f"Load average (1 min) during the rounds: {min(loads):.1f}-{max(loads):.1f}\n")
    print("| path | fleet poll wall ms | per guest median ms | CPU ms (ours + virsh) |")
    print("|---|---|---|---|")
    for kind, label in (
        ("verbs", "libvirt verbs: guestinfo + domtime (no taint)"),
        ("raw", "qemu-agent-command per command (taints)"),
    ):
        walls = [r[0] for r in rows[kind]]
        cpus = [r[1] for r in rows[kind]]
        per = [g for r in rows[kind] for g in r[2]]
        print(
            f"| {label} | {statistics.median(walls) * 1e3:.0f} "
            f"| {statistics.median(per) * 1e3:.0f} | {statistics.median(cpus) * 1e3:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--libvirt-calls", type=int, default=200)
    parser.add_argument("--no-libvirt", action="store_true")
    parser.add_argument("--libvirt-guests", type=int, default=4)
    parser.add_argument("--libvirt-poll-only", action="store_true")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"Machine: {machine()}")
    print(f"Command: python bench/ssh_poll.py {' '.join(sys.argv[1:])}".rstrip())
    if args.libvirt_poll_only:
        asyncio.run(libvirt_poll(args.libvirt_guests, args.rounds))
        return
    asyncio.run(ssh_vs_local(args.agents, args.rounds))
    if not args.no_libvirt:
        asyncio.run(libvirt_latency(args.libvirt_calls))
        asyncio.run(libvirt_poll(args.libvirt_guests, args.rounds))


if __name__ == "__main__":
    main()
