"""Windows guests freeze through VSS, which lets writes go by itself after 10 s: a longer
deadline is clamped to 10 s, and a thaw refused because VSS already let go counts as
done (the guest says it is thawed), not as a failed thaw (engine on simulated guests)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.fleet.actions import VSS_FREEZE_LIMIT
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import FreezeState
from qgadash.sim import SimFleet, SimVm, make_profile


class GuestClock:
    """The guests' monotonic clock, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def guest_clock() -> GuestClock:
    return GuestClock()


@pytest.fixture
async def engine(tmp_path: Path, guest_clock: GuestClock) -> AsyncIterator[FleetEngine]:
    vms = [SimVm("linux", make_profile(0)), SimVm("win", make_profile(9))]  # one in ten: Windows
    assert vms[1].profile.windows and not vms[0].profile.windows
    async with SimFleet(tmp_path / "sim", vms, clock=guest_clock) as fleet:
        hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=1.0, session="per-poll")
        engine = FleetEngine(load_config(hosts))
        try:
            await engine.poll_once()
            yield engine
        finally:
            await engine.stop()


async def test_a_windows_freeze_deadline_is_clamped_to_the_vss_limit(engine: FleetEngine) -> None:
    started = time.time()
    results = await engine.freeze(["sim/linux", "sim/win"], thaw_after=60)
    assert all(r.ok for r in results), results
    deadlines = {h.vm_id: h.deadline for h in engine.holds()}
    win, linux = deadlines["sim/win"], deadlines["sim/linux"]
    assert win is not None and linux is not None
    assert started + VSS_FREEZE_LIMIT - 1 < win <= time.time() + VSS_FREEZE_LIMIT
    assert linux > started + 59


async def test_a_thaw_after_vss_let_go_is_done_not_failed(
    engine: FleetEngine, guest_clock: GuestClock
) -> None:
    [frozen] = await engine.freeze(["sim/win"], thaw_after=0)
    assert frozen.ok
    guest_clock.offset += VSS_FREEZE_LIMIT + 1  # VSS has let the writes go
    [thawed] = await engine.thaw(["sim/win"])
    assert thawed.ok is True, thawed.error
    assert "already thawed by the guest" in str(thawed.value)
    assert "10 seconds" in str(thawed.value)
    snap = engine.store.get("sim/win")
    assert snap is not None and snap.freeze is FreezeState.THAWED and snap.thaw_error is None
    assert engine.frozen_by_us() == []


async def test_cli_freeze_of_a_windows_guest_says_10_s_holds_it_and_exits_0(
    tmp_path: Path, engine: FleetEngine
) -> None:
    """End to end: the CLI's own deadline thaw lands when VSS has let go (the simulated
    guest refuses a thaw after 10 s, as the real one does); exit 0, nothing red."""
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qgadash", "--hosts", str(tmp_path / "hosts.toml"),
        "freeze", "--yes", "--match", "sim/win", "--thaw-after", "30",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 0, out.decode() + text
    assert "Windows guests hold a freeze at most 10 s" in text and "sim/win" in text
    assert "COULD NOT THAW" not in text and "thawed: 1 VM" in text
    assert time.monotonic() - started < 25  # thawed at 10 s, not at 30
