"""libvirt guests as libvirt sees them: its own verbs (no taint), its domain states.

One TCG guest, `lv-verbs`, booted once for the module and never sent a raw
`qemu-agent-command` until the last step of the taint test (its boot is awaited with
`virsh guestinfo`, not the raw guest-ping the other module's fixture uses): libvirt
writes "Domain id=N is tainted: custom-ga-command" to the domain's log the first time one
is sent, so the log says whether qgadash sent any.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentCommandError
from qgadash.agent.replies import FreezeState
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, VmRef, VmSnapshot
from qgadash.fleet.polling import PollCache, PollPlan, poll_with
from qgadash.fleet.report import status_document
from qgadash.transport.libvirt import LibvirtCaller, LibvirtHypervisor
from qgadash.ui.fleet_view import Palette
from qgadash.ui.vm_view import agent_text
from tests.guests.image import GuestImage
from tests.integration.libvirtd import Libvirtd, domain_xml, running_libvirtd, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.guest]

NAME = "lv-verbs"
TAINT = "custom-ga-command"


def domain_log(name: str) -> str:
    try:
        return Path(f"/var/log/libvirt/qemu/{name}.log").read_text(errors="replace")
    except OSError:
        return ""


def wait_booted_untainted(daemon: Libvirtd, name: str, timeout: float = 120) -> None:
    """Until the guest is up and its agent answers libvirt's own guestinfo."""
    deadline = time.monotonic() + timeout
    while "qgadash-init: ready" not in daemon.console(name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not boot: {daemon.console(name)[-2000:]}")
        time.sleep(0.2)
    while True:
        probe = virsh("guestinfo", name, "--hostname", check=False)
        if probe.returncode == 0 and "hostname" in probe.stdout:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: agent never answered: {probe.stderr.strip()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[Libvirtd]:
    with running_libvirtd() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def verbs_domain(libvirtd: Libvirtd, guest_image: GuestImage) -> Iterator[str]:
    kernel = guest_image.vmlinux or guest_image.bzimage
    libvirtd.destroy(NAME)  # a leftover of an interrupted run
    Path(f"/var/log/libvirt/qemu/{NAME}.log").unlink(missing_ok=True)
    name = libvirtd.start_guest(kernel, guest_image.initrd, NAME, ip="10.0.2.31/24")
    try:
        wait_booted_untainted(libvirtd, name)
        yield name
    finally:
        libvirtd.destroy(name)


async def caller_for(hv: LibvirtHypervisor, name: str) -> LibvirtCaller:
    found = {agent.name: agent.address for agent in await hv.discover([])}
    caller = await hv.endpoint(found[name]).connect(10)
    assert isinstance(caller, LibvirtCaller)
    return caller


async def test_poll_and_freeze_through_libvirt_verbs_leave_no_taint(
    verbs_domain: str, tmp_path: Path
) -> None:
    assert TAINT not in domain_log(verbs_domain)
    # The product path first: hosts.toml, the engine's polls, a freeze with its deadline
    # and keepers, and the thaw.
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[settings]\ntimeout = 5.0\n[[hypervisor]]\nname = "lv"\nvia = "libvirt"\n')
    engine = FleetEngine(load_config(hosts))
    vm_id = f"lv/{verbs_domain}"
    try:
        await engine.poll_once()
        snap = engine.store.get(vm_id)
        assert snap is not None and snap.agent is AgentState.OK and snap.facts.hostname, snap
        assert snap.freeze is FreezeState.THAWED
        (frozen,) = await engine.freeze([vm_id], thaw_after=60)
        assert frozen.ok and frozen.value >= 1, frozen
        await engine.poll_vm(vm_id)
        assert engine.store.get(vm_id).freeze is FreezeState.FROZEN  # type: ignore[union-attr]
        (thawed,) = await engine.thaw([vm_id])
        assert thawed.ok, thawed
        await engine.poll_vm(vm_id)
        assert engine.store.get(vm_id).freeze is FreezeState.THAWED  # type: ignore[union-attr]
    finally:
        await engine.stop()
    assert TAINT not in domain_log(verbs_domain), domain_log(verbs_domain)[-1500:]

    hv = LibvirtHypervisor("lab")
    try:
        caller = await caller_for(hv, verbs_domain)
        snapshot = VmSnapshot(VmRef("lab", verbs_domain, verbs_domain))
        outcome = await poll_with(caller, snapshot, PollPlan(), 0, 20, PollCache())
        facts = outcome.facts
        assert outcome.error is None
        assert facts.hostname == verbs_domain
        assert facts.os is not None and facts.os.kernel_release
        assert facts.timezone is not None
        assert any(fs.mountpoint == "/data" for fs in facts.filesystems or ())
        addresses = {a.address for nic in facts.interfaces or () for a in nic.addresses}
        assert "10.0.2.31" in addresses
        assert facts.time_drift_s is not None
        assert outcome.freeze is FreezeState.THAWED
        # guest-info has no libvirt verb: not asked, and said why.
        info = (await caller.call_many([("guest-info", None)], timeout=5))[0]
        assert isinstance(info, AgentCommandError) and "taint" in info.desc
        try:
            assert await caller.call("guest-fsfreeze-freeze", timeout=20) >= 1
            assert await caller.call("guest-fsfreeze-status", timeout=5) == "frozen"
            polled = await poll_with(
                caller, outcome.applied_to(snapshot), PollPlan(), 1, 20, PollCache()
            )
            assert polled.freeze is FreezeState.FROZEN
            with pytest.raises(AgentCommandError) as caught:
                await caller.call("guest-get-fsinfo", timeout=5)
            assert caught.value.disabled
        finally:
            assert await caller.call("guest-fsfreeze-thaw", timeout=20) >= 1
        assert await caller.call("guest-fsfreeze-status", timeout=5) == "thawed"
        assert caller.note is None
        assert TAINT not in domain_log(verbs_domain), domain_log(verbs_domain)[-1500:]

        # The check can fail: a command with no libvirt verb taints, and the caller says so.
        await caller.call("guest-get-vcpus", timeout=5)
        assert caller.note is not None and TAINT in caller.note
        assert TAINT in domain_log(verbs_domain)
    finally:
        await hv.close()

    # What the operator sees: the engine's raw command, then the taint in the VM's
    # details (Agent tab) and in `status --json`.
    async with FleetEngine(load_config(hosts)) as engine:
        await engine.poll_vm(vm_id)
        assert engine.store.note(vm_id) is None  # this process has sent nothing raw yet
        (raw,) = [await engine.agent_command(vm_id, "guest-get-vcpus", None)]
        assert raw.ok, raw
        note = engine.store.note(vm_id)
        assert note is not None and TAINT in note
        snap = engine.store.get(vm_id)
        assert snap is not None
        assert TAINT in agent_text(snap, Palette(), note).plain
        doc = status_document([snap], [], engine.store.notes())
        assert TAINT in doc["vms"][0]["agent"]["note"]


async def test_domain_states_reach_the_row_from_libvirt_events(
    verbs_domain: str, tmp_path: Path
) -> None:
    """Suspend, resume, destroy: each reaches the row from libvirt's lifecycle event. The
    poll interval is an hour and nothing polls after the first: only events can do it.
    (Last in the module: it destroys the domain.)"""
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        "[settings]\npoll_interval = 3600\ntimeout = 5.0\n"
        '[[hypervisor]]\nname = "lv"\nvia = "libvirt"\n'
    )
    engine = FleetEngine(load_config(hosts))
    vm_id = f"lv/{verbs_domain}"
    seen: list[tuple[AgentState, str | None]] = []

    def record() -> None:
        engine.store.take_changes()  # re-arms the store's one-shot notification
        snap = engine.store.get(vm_id)
        if snap is not None and (not seen or seen[-1] != (snap.agent, snap.error)):
            seen.append((snap.agent, snap.error))

    async def until(agent: AgentState, error: str | None) -> None:
        try:
            async with asyncio.timeout(30):  # a failure bound, not a measurement
                while (agent, error) not in seen:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"never {agent} {error}: {seen}") from None

    unsubscribe = engine.store.subscribe(record)
    try:
        await engine.poll_once()
        first = engine.store.get(vm_id)
        assert first is not None and first.agent is AgentState.OK, first
        link = engine._links["lv"]
        assert isinstance(link, LibvirtHypervisor)
        assert link.domain_state(first.ref.address) == "running"
        await asyncio.wait_for(link.watch.watching.wait(), 30)
        virsh("suspend", verbs_domain)
        await until(AgentState.SUSPENDED, "libvirt: paused")
        virsh("resume", verbs_domain)
        await until(AgentState.PENDING, None)
        virsh("destroy", verbs_domain)
        await until(AgentState.STOPPED, "libvirt: shut off")
        states = [s for s in seen if s[1] is None or s[1].startswith("libvirt:")]
        assert states[-3:] == [
            (AgentState.SUSPENDED, "libvirt: paused"),
            (AgentState.PENDING, None),
            (AgentState.STOPPED, "libvirt: shut off"),
        ], seen
    finally:
        unsubscribe()
        await engine.stop()


async def test_session_uri_reaches_a_session_domain(
    libvirtd: Libvirtd, guest_image: GuestImage, tmp_path: Path
) -> None:
    """`uri = "qemu:///session"` in hosts.toml: the domain is created through that URI,
    and qgadash's virsh processes open it (not qemu:///system)."""
    kernel = guest_image.vmlinux or guest_image.bzimage
    name = "lv-session"
    session = ["virsh", "-c", "qemu:///session"]
    subprocess.run([*session, "destroy", name], capture_output=True)
    disk = tmp_path / "data.img"
    with disk.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True, capture_output=True)
    Path(f"/var/log/libvirt/qemu/{name}.console").unlink(missing_ok=True)
    cmdline = f"console=ttyS0 panic=-1 qga.hostname={name} qga.ip=10.0.2.32/24 qga.agent=1"
    xml = tmp_path / "domain.xml"
    xml.write_text(domain_xml(name, kernel, guest_image.initrd, cmdline, disk))
    subprocess.run([*session, "create", str(xml)], check=True, capture_output=True)
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        '[settings]\ntimeout = 5.0\n[[hypervisor]]\nname = "mine"\nvia = "libvirt"\n'
        'uri = "qemu:///session"\n'
    )
    engine = FleetEngine(load_config(hosts))
    try:
        deadline = time.monotonic() + 120
        while "qgadash-init: ready" not in libvirtd.console(name):
            assert time.monotonic() < deadline, libvirtd.console(name)[-2000:]
            await asyncio.sleep(0.2)
        while True:
            await engine.poll_once()
            snap = engine.store.get(f"mine/{name}")
            if snap is not None and snap.agent is AgentState.OK:
                break
            assert time.monotonic() < deadline, snap
            await asyncio.sleep(0.3)
        assert snap.facts.hostname == name
        link = engine._links["mine"]
        assert isinstance(link, LibvirtHypervisor) and link.uri == "qemu:///session"
        assert link.domain_state(snap.ref.address) == "running"
        uris = {
            arg
            for pid in child_pids("virsh")
            for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if arg.startswith(b"qemu:")
        }
        assert uris == {b"qemu:///session"}
    finally:
        await engine.stop()
        subprocess.run([*session, "destroy", name], capture_output=True)


def child_pids(program: str) -> set[int]:
    """Pids of this process's children running `program`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        mine = int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()
        if mine and os.path.basename(argv0) == program.encode():
            found.add(int(entry.name))
    return found
