"""What the dashboard costs the terminal link: bytes and frames per second, and its CPU.

    python bench/terminal_bytes.py                 # 24 and 500 VMs, 80x24 and 200x50
    python bench/terminal_bytes.py --vms 500 --size 200x50 --seconds 30
    python bench/terminal_bytes.py --args=--low-bandwidth
    python bench/terminal_bytes.py --vms 500 --size 200x50 --phases idle --profile idle.prof

The simulator runs in its own process (`python -m qgadash.sim --demo`, polled every
5 s), the dashboard (`python -m qgadash --hosts ...`) on a pseudo-terminal of the given
size; a thread reads everything it writes, as an SSH client would. After a warm-up
(every VM polled and drawn) each phase lasts `--seconds`:

- idle: nobody types;
- cursor: the cursor moves, 4 keys a second (10 down, 10 up, ...);
- filtered: a filter that hides every row (nothing changes in view).

For each: bytes/s, frames/s (a frame: writes less than 5 ms apart), and the
dashboard process's CPU (user+system, % of one core). With `htop` installed it is
measured the same way beside it, for scale. Targets (issue 18): 500 VMs at 200x50
idle <= 20 KB/s, filtered <= 2 KB/s, CPU <= 10 % of a core.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# QGADASH_REPO: measure another checkout (e.g. the main branch, for a before/after).
REPO = Path(os.environ.get("QGADASH_REPO") or Path(__file__).resolve().parents[1])
FRAME_GAP = 0.005  # writes closer than this belong to one frame
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Capture:
    """Everything a process writes to its terminal, with when."""

    fd: int
    chunks: list[tuple[float, int]] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)  # everything, with --dump
    keep: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.chunks.append((time.monotonic(), len(data)))
            if self.keep:
                self.text += data
        self.done.set()

    def slice(self, start: float, end: float) -> bytes:
        """What was written between `start` and `end` (with --dump)."""
        offset = 0
        begin = stop = None
        for t, n in self.chunks:
            if begin is None and t >= start:
                begin = offset
            if t >= end:
                stop = offset
                break
            offset += n
        return bytes(self.text[begin or 0 : stop])

    def window(self, start: float, end: float) -> tuple[int, int]:
        """Bytes and frames written between `start` and `end`."""
        total = frames = 0
        last = -1.0
        for t, n in self.chunks:
            if start <= t < end:
                total += n
                if t - last > FRAME_GAP:
                    frames += 1
                last = t
        return total, frames


def spawn(
    argv: list[str], cols: int, rows: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True
    )
    os.close(slave)
    return proc, master


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_quiet(cap: Capture, seconds: float, until: float) -> None:
    """Until the terminal has been written to little for `seconds` (or `until`)."""
    while time.monotonic() < until:
        now = time.monotonic()
        written, _ = cap.window(now - seconds, now)
        if written < 4096 and now - (cap.chunks[0][0] if cap.chunks else now) > seconds:
            return
        time.sleep(0.25)


def measure(proc: subprocess.Popen[bytes], cap: Capture, seconds: float, keys: bytes = b"",
            fd: int = -1, dump: str = "") -> tuple[float, float, float]:  # fmt: skip
    """bytes/s, frames/s, CPU % over `seconds`; `keys` typed at 4 a second meanwhile."""
    start = time.monotonic()
    cpu0 = cpu_seconds(proc.pid)
    i = 0
    typed: list[float] = []
    while time.monotonic() - start < seconds:
        if keys:
            typed.append(time.monotonic())
            os.write(fd, keys[i % len(keys) : i % len(keys) + 1])
            i += 1
        time.sleep(0.25 if keys else 0.5)
    end = time.monotonic()
    cpu = cpu_seconds(proc.pid) - cpu0
    written, frames = cap.window(start, end)
    if typed:
        print("   " + key_latency(cap, typed), flush=True)
    if dump:
        Path(dump).write_bytes(cap.slice(start, end))
    span = end - start
    return written / span, frames / span, 100 * cpu / span


def key_latency(cap: Capture, typed: list[float]) -> str:
    """Key press -> the frame that answers it: the first write after the key, and the
    same over a 1 Mbit/s link with 100 ms RTT (the frame's bytes at 125 KB/s, plus the
    round trip: the key going out, the frame coming back)."""
    local: list[float] = []
    linked: list[float] = []
    chunks = list(cap.chunks)
    for t in typed:
        after = [(ct, n) for ct, n in chunks if ct > t]
        if not after:
            continue
        first = after[0][0]
        frame = 0
        last = first
        for ct, n in after:
            if ct - last > FRAME_GAP:
                break
            frame += n
            last = ct
        local.append(last - t)
        linked.append(last - t + 0.1 + frame / 125_000)
    if not local:
        return "key -> frame: no frames"
    local.sort()
    linked.sort()

    def p95(xs: list[float]) -> float:
        return 1000 * xs[min(len(xs) - 1, int(len(xs) * 0.95))]

    return (
        f"key -> frame p95 {p95(local):.0f} ms on the pty; "
        f"{p95(linked):.0f} ms over 1 Mbit/s, 100 ms RTT (n={len(local)})"
    )


def stop(proc: subprocess.Popen[bytes], fd: int) -> None:
    if proc.poll() is None:
        os.write(fd, b"\x11")  # Ctrl-Q
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def run_dashboard(hosts: Path, cols: int, rows: int, args: argparse.Namespace) -> list[str]:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor", PYTHONPATH=str(REPO))
    env.pop("NO_COLOR", None)
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    argv = [sys.executable, *profile, "-m", "qgadash", "--hosts", str(hosts), *args.args]
    proc, fd = spawn(argv, cols, rows, env)
    cap = Capture(fd, keep=bool(args.dump))
    threading.Thread(target=cap.run, daemon=True).start()
    out = []
    try:
        time.sleep(args.warmup)  # every VM polled (5 s) and drawn
        wait_quiet(cap, 2.0, time.monotonic() + 10)
        phases = (("idle", b""), ("cursor", b"jjjjjjjjjjkkkkkkkkkk"), ("filtered", None))
        for phase, keys in phases:
            if phase not in args.phases:
                continue
            if keys is None:
                os.write(fd, b"/")
                time.sleep(0.5)
                os.write(fd, b"no-such-vm-anywhere\r")
                time.sleep(2)
                keys = b""
            dump = f"{args.dump}.{args.vms_now}.{cols}x{rows}.{phase}" if args.dump else ""
            rate, fps, cpu = measure(proc, cap, args.seconds, keys, fd, dump)
            out.append(
                f"{args.vms_now:4d} VMs {cols:3d}x{rows:<2d} {phase:8s} "
                f"{rate / 1000:8.1f} KB/s {fps:6.1f} frames/s  CPU {cpu:5.1f} %"
            )
            print(out[-1], flush=True)
    finally:
        stop(proc, fd)
        cap.done.wait(5)
        os.close(fd)
    return out


def run_htop(cols: int, rows: int, seconds: float) -> str | None:
    htop = shutil.which("htop")
    if htop is None:
        return None
    env = dict(os.environ, TERM="xterm-256color")
    proc, fd = spawn([htop], cols, rows, env)
    cap = Capture(fd)
    threading.Thread(target=cap.run, daemon=True).start()
    time.sleep(3)
    rate, fps, cpu = measure(proc, cap, seconds)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    cap.done.wait(5)
    os.close(fd)
    return (
        f"htop     {cols:3d}x{rows:<2d} idle     {rate / 1000:8.1f} KB/s {fps:6.1f} frames/s"
        f"  CPU {cpu:5.1f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, action="append", help="default: 24 and 500")
    parser.add_argument("--size", action="append", help="COLSxROWS; default: 80x24 and 200x50")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (default 20)")
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--dump", help="write what each phase wrote to DUMP.N.CxR.PHASE")
    parser.add_argument("--args", action="append", default=[], help="more dashboard arguments")
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["idle", "cursor", "filtered"],
        help="which phases to measure (default: all three)",
    )
    parser.add_argument(
        "--profile",
        help="run the dashboard under cProfile, stats to PROFILE "
        "(the warm-up included; the CPU figures then include the profiler)",
    )
    args = parser.parse_args()
    sizes = [tuple(int(p) for p in s.split("x")) for s in (args.size or ["80x24", "200x50"])]
    print(f"load average: {os.getloadavg()}; {os.cpu_count()} CPUs")
    for n in args.vms or [24, 500]:
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(prefix="qgadash-bytes-", dir=base) as tmp:
            sim = subprocess.Popen(
                [sys.executable, "-m", "qgadash.sim", "--dir", tmp, "--demo", "--count", str(n),
                 "--poll-interval", "5"],
                stdout=subprocess.PIPE, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
            try:
                assert sim.stdout is not None
                line = sim.stdout.readline()
                if b"ready" not in line:
                    raise RuntimeError(f"the simulator did not start: {line!r}")
                args.vms_now = n
                for cols, rows in sizes:
                    run_dashboard(Path(tmp) / "hosts.toml", cols, rows, args)
            finally:
                sim.terminate()
                sim.wait(timeout=30)
    for cols, rows in sizes:
        htop = run_htop(cols, rows, args.seconds)
        print(htop or "htop: not installed", flush=True)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
