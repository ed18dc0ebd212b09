"""Hostile agents mixed into a healthy simulated fleet: nothing crashes, leaks or paints.

The simulator runs in its own process, so the memory measured is qgadash's alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOSTILE = [
    "silent",
    "garbage",
    "disconnect",
    "oversize",
    "markup",
    "invalid-utf8",
    "huge-reply",
    "endless",
    "deep-nesting",
    "out-of-range",
    "wrong-ids",
    "repeated-ids",
    "ff-flood",
    "late-reply",
    "sync-only",
    "accept-close",
]
HEALTHY = 20
TIMEOUT = 3.0

PEAK_RSS = (
    "import resource, sys\n"
    "from qgadash.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def start_sim(directory: Path, faults: list[str], count: int) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "qgadash.sim", "--count", str(count), "--dir", str(directory)]
    args += ["--timeout", str(TIMEOUT), "--session", "per-poll"]
    for fault in faults:
        args += ["--fault", f"{fault}=1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "ready" in proc.stdout.readline()
    return proc


@pytest.fixture
def hostile_fleet(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "hostile"
    proc = start_sim(directory, HOSTILE, HEALTHY + len(HOSTILE))
    try:
        yield directory / "hosts.toml"
    finally:
        proc.terminate()
        proc.wait(10)


def run_status(hosts: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float, int]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "--hosts", str(hosts), "status", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    match = re.search(r"peak-rss-kb (\d+)", proc.stderr)
    assert match, proc.stderr
    return proc, elapsed, int(match.group(1))


def test_status_json_with_hostile_agents(hostile_fleet: Path, tmp_path: Path) -> None:
    proc, elapsed, peak_kb = run_status(hostile_fleet, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    states = {vm["id"]: vm["agent"] for vm in doc["vms"]}
    assert len(states) == HEALTHY + len(HOSTILE)
    bad = {i: a for i, a in states.items() if a["state"] != "ok"}
    ok = [i for i, a in states.items() if a["state"] == "ok"]
    # Every healthy VM is ok; each hostile one is error/timeout/unreachable with a one-line reason
    # (markup, out-of-range and repeated-ids agents may still be usable: then they are ok).
    assert len(ok) >= HEALTHY
    for vm_id, agent in bad.items():
        assert agent["state"] in ("error", "timeout", "unreachable"), (vm_id, agent)
        assert agent["error"] and "\n" not in agent["error"] and len(agent["error"]) <= 300
    assert len(bad) >= len(HOSTILE) - 4
    assert proc.returncode == 1
    # Finishes within the timeout plus 2 s (plus interpreter start-up).
    baseline = run_baseline(tmp_path)
    assert elapsed - baseline[1] <= TIMEOUT + 2.0, (elapsed, baseline[1])
    # Memory: the 100 MB reply and the endless stream cost less than 50 MB over a healthy run.
    assert (peak_kb - baseline[2]) / 1024 < 50, (peak_kb, baseline[2])


def run_baseline(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float, int]:
    directory = tmp_path / "healthy"
    sim = start_sim(directory, [], HEALTHY + len(HOSTILE))
    try:
        return run_status(directory / "hosts.toml", "--json")
    finally:
        sim.terminate()
        sim.wait(10)


def test_plain_status_prints_no_escape_sequences_or_markup_effects(hostile_fleet: Path) -> None:
    proc, _, _ = run_status(hostile_fleet)
    out = proc.stdout
    assert "\x1b" not in out and "\x07" not in out and "\x00" not in out and "\r" not in out
    for ch in out:
        assert ch == "\n" or ch.isprintable(), repr(ch)
    # Markup from the guest is printed as the literal text it was.
    assert "[bold red]" in out
