"""Power and suspend through the product inside real guests, and a guest without agent.

Each of these ends its guest (or runs one without an agent), so none uses the shared
guests: the module's ``lab`` boots all of them in one parallel batch. What the product
reports is checked against what QEMU says happened (QMP, the process, the console).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgadash.fleet.actions import Action
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import ActionResult, AgentState
from tests.guests.fixtures import GuestFactory
from tests.guests.image import GuestImage
from tests.guests.product import (
    StateLog,
    cli_json,
    engine_for,
    run_cli,
    snap,
    vm_id,
    wait_console,
    wait_for,
    wait_for_sync,
    write_hosts,
)
from tests.guests.qmp import QMPError
from tests.guests.vm import INIT_READY, Guest, GuestSpec

pytestmark = pytest.mark.guest

LAB_SPECS = (
    GuestSpec(name="noagent", ip="10.0.2.20/24", agent=False),
    GuestSpec(name="poweroff", ip="10.0.2.21/24"),
    GuestSpec(name="reboot", ip="10.0.2.22/24", reboot=True),  # without -no-reboot
    GuestSpec(name="halt", ip="10.0.2.23/24"),
    # PVH-booted guests cannot resume from S3 (guests.md): the bzImage for RAM.
    GuestSpec(name="sram", ip="10.0.2.24/24", kernel="bzimage"),
    # Hibernation needs swap at least as large as RAM, and room for the image in RAM:
    # 128 MiB is too little: the initramfs root cannot be swapped out, and the image
    # allocation comes up short ("Image allocation is N pages short").
    GuestSpec(name="sdisk", ip="10.0.2.25/24", memory_mb=256, swap_mb=288),
    GuestSpec(name="shybrid", ip="10.0.2.26/24", memory_mb=256, swap_mb=288),
)
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture(scope="module")
def lab(
    guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Guest]]:
    """``{name: Guest}``, booted together on first use; each test may stop its own."""
    factory = GuestFactory(guest_image, tmp_path_factory.mktemp("lab"))
    try:
        yield {g.name: g for g in factory.many(LAB_SPECS)}
    finally:
        factory.stop_all()


def qmp_status(guest: Guest) -> str | None:
    """QMP's run state, or None once QEMU (and its QMP socket) is gone."""
    if not guest.is_running():
        return None
    try:
        return guest.status()
    except (OSError, QMPError, ValueError):
        return None if not guest.is_running() else "unknown"


async def boot_id(engine: FleetEngine, guest: Guest) -> bytes:
    data = (await engine.files.read(vm_id(guest), BOOT_ID)).data.strip()
    assert len(data) == 36, data
    return data


async def test_guest_without_agent_reads_timeout(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["noagent"]
    assert guest.status() == "running"
    vm = vm_id(guest)
    async with engine_for(tmp_path, [guest], timeout=1.0) as engine:
        started = time.monotonic()
        await engine.poll_vm(vm)
        s = snap(engine, guest)
        assert s.agent is AgentState.TIMEOUT, s
        assert s.error and "within 1 s" in s.error, s.error
        assert time.monotonic() - started < 3.0  # bounded by the timeout, not hung
        assert s.facts.info is None and s.last_seen is None
        plan = engine.plan(Action.FREEZE, [vm])
        assert plan.eligible == () and plan.skipped[0][1].startswith("agent "), plan

    hosts = write_hosts(tmp_path / "cli.toml", [guest], timeout=1.0)
    proc = run_cli(hosts, "status", "--json", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (doc,) = cli_json(proc)["vms"]
    assert doc["agent"]["state"] == "timeout" and doc["agent"]["error"]
    assert doc["hostname"] is None and doc["fsfreeze"] is None


def test_cli_shutdown_powerdown_ends_qemu(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["poweroff"]
    vm = vm_id(guest)
    hosts = write_hosts(tmp_path / "hosts.toml", [guest])
    proc = run_cli(hosts, "shutdown", "--mode", "powerdown", "--yes", "--json", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = cli_json(proc)["results"]
    assert result["id"] == vm and result["ok"] is True, result
    assert result["value"].startswith("sent;"), result  # no reply on success: says so
    assert guest.wait_exit(30) == 0, guest.console_tail()
    assert "qgadash-shutdown: poweroff" in guest.console_tail()

    proc = run_cli(hosts, "status", "--json", tmp_path=tmp_path)
    assert proc.returncode == 1
    (doc,) = cli_json(proc)["vms"]
    assert doc["agent"]["state"] == "unreachable", doc  # QEMU and its socket are gone


async def test_reboot_and_the_held_session_recovers(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["reboot"]
    vm = vm_id(guest)
    pid = guest.pid
    async with engine_for(
        tmp_path, [guest], session="held", timeout=1.0, poll_interval=0.5
    ) as engine:
        log = StateLog(engine, guest)
        await engine.start()
        await wait_for(lambda: snap(engine, guest).agent is AgentState.OK, 10, "first poll ok")
        before = await boot_id(engine, guest)

        (result,) = await engine.shutdown([vm], mode="reboot")
        assert result.ok is True, result.error
        wait_console(guest, "qgadash-shutdown: reboot", 30)
        wait_console(guest, INIT_READY, 60, count=2)  # the second boot reached its agent
        rebooted = time.time()

        def polled_ok_after_reboot() -> bool:
            s = snap(engine, guest)
            return s.agent is AgentState.OK and (s.last_poll or 0) > rebooted

        # Only the engine's background polls run meanwhile: no operator action. (Whether
        # a poll lands in the few seconds the agent is away, showing `rebooting`, is luck.)
        await wait_for(polled_ok_after_reboot, 30, f"a poll ok after the reboot ({log.states})")
        states = [s for _, s in log.states]
        gone = set(states[states.index(AgentState.OK) :]) - {AgentState.OK}
        assert gone <= {AgentState.REBOOTING}, log.states  # expected, not a fault
        after = await boot_id(engine, guest)
        assert after != before  # a new boot, answered over the same held session
        assert snap(engine, guest).facts.hostname == guest.hostname
    assert guest.pid == pid and guest.status() == "running"
    guest.stop()


async def test_halt_leaves_qemu_running_without_an_agent(
    tmp_path: Path, lab: dict[str, Guest]
) -> None:
    guest = lab["halt"]
    vm = vm_id(guest)
    async with engine_for(tmp_path, [guest], timeout=1.0) as engine:
        await engine.poll_vm(vm)
        assert snap(engine, guest).agent is AgentState.OK, snap(engine, guest).error
        (result,) = await engine.shutdown([vm], mode="halt")
        assert result.ok is True, result.error
        assert "off" not in str(result.value)
        wait_console(guest, "System halted", 30)
        assert guest.is_running() and guest.status() == "running"  # QEMU's view

        await engine.poll_vm(vm)
        s = snap(engine, guest)
        # Halted from here: its row says so, not a fault.
        assert s.agent is AgentState.STOPPED and s.lifecycle is not None, s
        assert s.lifecycle.label == "halted by you"
        assert "within" in (s.error or "")  # the socket still accepts: nobody answers

    hosts = write_hosts(tmp_path / "cli.toml", [guest], timeout=1.0)
    proc = run_cli(hosts, "status", "--json", tmp_path=tmp_path)
    assert proc.returncode == 1
    (doc,) = cli_json(proc)["vms"]
    assert doc["agent"]["state"] == "timeout", doc
    text = proc.stdout.lower()
    assert "powered" not in text and "poweroff" not in text and "shut down" not in text
    guest.stop()


# -- suspend: the product must report what the guest really did ------------------------------


def observe_suspend(guest: Guest, result: ActionResult, timeout: float = 90) -> str:
    """What happened to the VM after a suspend request: "suspended" (S3, or an S4 image
    kept in RAM), "exited" (hibernated: QEMU ended), or "running" (nothing).

    Every claim is checked against QEMU: an ok result must be followed by the VM going
    away, a failure must leave it running.
    """
    if result.ok is True:

        def outcome() -> str:
            if not guest.is_running():
                return "exited"
            return "suspended" if qmp_status(guest) == "suspended" else ""

        return wait_for_sync(
            outcome,
            timeout,
            f"{guest.name} suspended or gone after the product reported success",
            interval=0.1,
        )
    assert result.ok is False, f"outcome unknown: {result.error}"
    assert result.error, result
    assert guest.is_running() and qmp_status(guest) == "running"
    return "running"


async def test_suspend_ram_then_wake(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["sram"]
    vm = vm_id(guest)
    async with engine_for(tmp_path, [guest], timeout=1.0) as engine:
        await engine.poll_vm(vm)
        before = await boot_id(engine, guest)
        (result,) = await engine.suspend([vm], kind="ram")
        happened = observe_suspend(guest, result)
        # The real guest (protocol.md): no reply, QMP "suspended".
        assert happened == "suspended", (result, guest.console_tail())
        assert result.value.startswith("sent;"), result

        await engine.poll_vm(vm)  # requests queue until wakeup: the agent is silent
        assert snap(engine, guest).agent is AgentState.SUSPENDED, snap(engine, guest)

        guest.wakeup()

        async def ok_again() -> bool:
            await engine.poll_vm(vm)
            return snap(engine, guest).agent is AgentState.OK

        await wait_for(ok_again, 30, "the agent back after system_wakeup", interval=0.2)
        assert qmp_status(guest) == "running"
        assert await boot_id(engine, guest) == before  # resumed, not rebooted
    guest.stop()


async def test_suspend_disk(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["sdisk"]
    vm = vm_id(guest)
    async with engine_for(tmp_path, [guest], timeout=1.0) as engine:
        await engine.poll_vm(vm)
        (result,) = await engine.suspend([vm], kind="disk")
        happened = observe_suspend(guest, result)
        # The real guest with swap >= RAM hibernates: SUSPEND_DISK, then QEMU exits.
        assert happened == "exited", (result, guest.console_tail())
        await engine.poll_vm(vm)  # QEMU is gone: unreachable, and suspended from here
        assert snap(engine, guest).agent is AgentState.SUSPENDED, snap(engine, guest)
        assert "connect" in (snap(engine, guest).error or ""), snap(engine, guest)
    assert guest.wait_exit(5) == 0


def test_cli_suspend_hybrid(tmp_path: Path, lab: dict[str, Guest]) -> None:
    guest = lab["shybrid"]
    vm = vm_id(guest)
    hosts = write_hosts(tmp_path / "hosts.toml", [guest])
    proc = run_cli(hosts, "suspend", "hybrid", "--yes", "--json", tmp_path=tmp_path)
    (doc,) = cli_json(proc)["results"]
    assert doc["id"] == vm
    result = ActionResult(vm, doc["ok"], doc["value"], doc["error"])
    happened = observe_suspend(guest, result)
    assert proc.returncode == (0 if result.ok else 1), proc.stdout + proc.stderr
    # The real busybox guest (no pm-utils, no systemd) refuses hybrid with its own words.
    assert happened == "running", (doc, guest.console_tail())
    assert "not supported" in doc["error"], doc
    proc = run_cli(hosts, "status", "--json", tmp_path=tmp_path)
    (status,) = cli_json(proc)["vms"]
    assert status["agent"]["state"] == "ok"  # the refusal left the guest as it was
    with contextlib.suppress(Exception):
        guest.stop()
