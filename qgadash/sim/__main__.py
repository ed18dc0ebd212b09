"""python -m qgadash.sim: serve a simulated fleet until SIGINT or SIGTERM.

Writes DIR/hosts.toml and prints `ready` on stdout once every socket listens (benchmarks
wait for that line). `--procs P` splits the fleet across P processes (this one and P-1
children), each serving a contiguous slice; the sockets all live in DIR, so the glob in
hosts.toml covers them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from qgadash.sim.fleet import (
    SimFleet,
    SimVm,
    fleet_slice,
    raise_open_file_limit,
    write_hosts_toml,
)
from qgadash.sim.profiles import Era, Fault, demo_fleet


def _fault_arg(text: str) -> tuple[Fault, int]:
    name, sep, number = text.partition("=")
    try:
        fault = Fault.parse(name)
        count = int(number) if sep else 1
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text}: the count must not be negative")
    return fault, count


def _era_arg(text: str) -> tuple[Era, int]:
    name, sep, number = text.partition("=")
    try:
        era = Era.parse(name)
        count = int(number) if sep else 1
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text}: the count must not be negative")
    return era, count


def _slice_arg(text: str) -> tuple[int, int]:
    index, _, total = text.partition("/")
    try:
        k, p = int(index), int(total)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slice wants K/P, got {text!r}") from None
    if not 0 <= k < p:
        raise argparse.ArgumentTypeError(f"--slice {text}: need 0 <= K < P")
    return k, p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qgadash.sim",
        description="Serve simulated qemu-ga agents on unix sockets (for --demo, tests and "
        "benchmarks). Prints 'ready' once every socket listens; stops on SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--dir",
        required=True,
        type=Path,
        help="directory for the sockets (<name>.sock) and hosts.toml; "
        "a tmpfs such as /dev/shm makes large fleets start much faster",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="number of VMs (default 100, or 24 with --demo)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        type=_fault_arg,
        default=[],
        metavar="NAME=COUNT",
        help="give COUNT VMs this fault; repeatable. Names: "
        + ", ".join(f.value for f in Fault if f is not Fault.NONE),
    )
    parser.add_argument(
        "--era",
        action="append",
        type=_era_arg,
        default=[],
        metavar="NAME=COUNT",
        help="give COUNT VMs an agent of this era; repeatable. Names: "
        + ", ".join(e.value for e in Era),
    )
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        help="split the fleet across this many processes (each listening "
        "socket and each held connection costs an open file)",
    )
    parser.add_argument("--seed", type=int, default=0, help="varies the generated guests")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the qgadash --demo fleet: one Windows guest, one with its agent "
        "down, one frozen, one slow, the rest healthy",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=5.0, help="poll_interval written to hosts.toml"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="timeout written to hosts.toml")
    parser.add_argument(
        "--session",
        choices=("held", "per-poll"),
        default="held",
        help="session written to hosts.toml",
    )
    parser.add_argument(
        "--backlog", type=int, default=1, help="accept queue length of each socket (qemu-ga uses 1)"
    )
    parser.add_argument("--slice", type=_slice_arg, default=None, help=argparse.SUPPRESS)
    return parser


def _fleet_vms(args: argparse.Namespace, indices: range | None) -> list[SimVm]:
    count = args.count
    if args.demo:
        vms = [SimVm(n, p, f) for n, p, f in demo_fleet(count, args.seed)]
        return vms if indices is None else [vms[i] for i in indices]
    faults: dict[Fault, int] = {}
    for fault, number in args.fault:
        faults[fault] = faults.get(fault, 0) + number
    eras: dict[Era, int] = {}
    for era, number in args.era:
        eras[era] = eras.get(era, 0) + number
    wanted = indices if indices is not None else range(count)
    return fleet_slice(count, args.seed, faults, wanted, eras)


def _slice_range(count: int, k: int, p: int) -> range:
    size = -(-count // p)
    return range(min(count, k * size), min(count, (k + 1) * size))


async def _serve(args: argparse.Namespace) -> int:
    procs = max(1, args.procs)
    if args.demo:
        procs = 1
    children: list[subprocess.Popen[bytes]] = []
    if args.slice is not None:
        k, p = args.slice
        vms = _fleet_vms(args, _slice_range(args.count, k, p))
    else:
        vms = _fleet_vms(args, _slice_range(args.count, 0, procs))
    fleet = SimFleet(args.dir, vms, backlog=args.backlog)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.slice is None and procs > 1:
            children = await _spawn_children(args, procs)
        await fleet.start()
        if args.slice is None:
            write_hosts_toml(
                args.dir / "hosts.toml",
                args.dir,
                poll_interval=args.poll_interval,
                timeout=args.timeout,
                session=args.session,
                count=args.count,
            )
        print("ready", flush=True)
        if args.slice is not None:
            _stop_when_stdin_closes(loop, stop)  # the parent went away
        await stop.wait()
    finally:
        await fleet.stop()
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
            if child.poll() is None:
                child.kill()
                child.wait()
    return 0


async def _spawn_children(args: argparse.Namespace, procs: int) -> list[subprocess.Popen[bytes]]:
    children: list[subprocess.Popen[bytes]] = []
    base = [
        sys.executable,
        "-m",
        "qgadash.sim",
        "--dir",
        str(args.dir),
        "--count",
        str(args.count),
        "--seed",
        str(args.seed),
        "--backlog",
        str(args.backlog),
    ]
    for fault, number in args.fault:
        base += ["--fault", f"{fault.value}={number}"]
    for era, number in args.era:
        base += ["--era", f"{era.value}={number}"]
    try:
        for k in range(1, procs):
            children.append(
                subprocess.Popen(
                    [*base, "--slice", f"{k}/{procs}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        for child in children:
            assert child.stdout is not None
            line = await asyncio.to_thread(child.stdout.readline)
            if line.strip() != b"ready":
                raise RuntimeError(f"a simulator child process failed to start (pid {child.pid})")
    except BaseException:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        raise
    return children


def _stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = 24 if args.demo else 100
    if args.count < 0:
        parser.error("--count must not be negative")
    if args.procs < 1:
        parser.error("--procs must be at least 1")
    wanted = sum(n for _, n in args.fault)
    if wanted > args.count:
        parser.error(f"--fault asks for {wanted} faulty VMs but --count is {args.count}")
    of_eras = sum(n for _, n in args.era)
    if of_eras > args.count:
        parser.error(f"--era asks for {of_eras} VMs but --count is {args.count}")
    raise_open_file_limit()
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"qgadash.sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
