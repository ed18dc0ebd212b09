"""A killed agent, as the product sees it: respawned by the guest, ok again by itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qgadash.fleet.model import AgentState
from tests.guests.product import (
    StateLog,
    engine_for,
    run_in_guest,
    snap,
    vm_id,
    wait_for,
)
from tests.guests.vm import Guest

pytestmark = pytest.mark.guest


@pytest.mark.parametrize("session", ["per-poll", "held"])
async def test_killed_agent_comes_back_by_itself(
    tmp_path: Path, shared_guests: list[Guest], session: str
) -> None:
    """qemu-ga is killed inside the guest; busybox init respawns it; the engine's own
    background polls bring the VM back to ok, with no call from the operator."""
    guest = shared_guests[0] if session == "per-poll" else shared_guests[1]
    vm = vm_id(guest)
    async with engine_for(
        tmp_path, [guest], session=session, timeout=1.0, poll_interval=0.3
    ) as engine:
        log = StateLog(engine, guest)
        await engine.start()
        await wait_for(lambda: snap(engine, guest).agent is AgentState.OK, 10, "first poll ok")
        old_pid = (await run_in_guest(engine, guest, "pidof qemu-ga"))["stdout"].strip()
        assert old_pid.isdigit(), old_pid

        # Delayed, so the guest-exec reply leaves before the agent dies.
        killed_at = time.time()
        await engine.with_agent(
            vm,
            lambda c: c.call(
                "guest-exec",
                {"path": "/bin/sh", "arg": ["-c", f"usleep 200000; kill {old_pid}"]},
                timeout=1.0,
            ),
        )

        # Only the engine's background polls run until the VM reads ok again.
        def polled_ok_since_kill() -> bool:
            s = snap(engine, guest)
            return (
                s.agent is AgentState.OK
                and s.last_poll is not None
                and s.last_poll > killed_at + 1.0  # well after the old agent died
            )

        await wait_for(polled_ok_since_kill, 20, f"ok again after the kill ({log.states})")
        log.close()
        assert log.states[-1][1] is AgentState.OK, log.states
        # And it is a new agent that answers (so the kill really happened).
        new_pid = (await run_in_guest(engine, guest, "pidof qemu-ga"))["stdout"].strip()
        assert new_pid.isdigit() and new_pid != old_pid, (old_pid, new_pid)
