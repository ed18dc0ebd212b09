"""Proxmox guests by name: `<vmid>.conf` read like Proxmox writes it, then over real SSH.

The config texts below are shaped like real ones of PVE 6, 7 and 8 (their keys, a
description as `#` lines, snapshot and pending sections, cloud-init); the sshd test puts
them in a directory laid out like /etc/pve/qemu-server and /var/run/qemu-server (real
qemu-ga agents behind `<vmid>.qga`, pidfiles) and discovers through a real OpenSSH sshd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentConnectionError
from qgadash.fleet.lifecycle import with_manager_state
from qgadash.fleet.model import AgentState, VmRef, VmSnapshot
from qgadash.transport.base import ManagedHypervisor
from qgadash.transport.proxmox import (
    agent_enabled,
    configs_script,
    parse_config,
    parse_configs_output,
)
from qgadash.transport.ssh import SshHypervisor
from tests.integration.realagent import RealAgent, short_temp_dir
from tests.integration.sshd import SshServer

PVE6 = """\
#Primary database%3A do not reboot during business hours
#
agent: 1
bootdisk: scsi0
cores: 4
ide2: none,media=cdrom
memory: 8192
name: db-primary
net0: virtio=DE:AD:BE:EF:01:01,bridge=vmbr0,firewall=1
numa: 0
ostype: l26
scsi0: local-lvm:vm-101-disk-0,size=64G
scsihw: virtio-scsi-pci
smbios1: uuid=6d1c7b0e-5c55-4d2b-9d6c-7f4e0a3b1c01
sockets: 1
vmgenid: 1b7b5d0c-8e2f-4d7a-9a55-0c6e2d9a7f01
"""

PVE7 = """\
agent: 1,fstrim_cloned_disks=1
boot: order=scsi0;ide2;net0
cores: 2
ide2: none,media=cdrom
memory: 4096
meta: creation-qemu=6.1.0,ctime=1639000000
name: web-1
net0: virtio=DE:AD:BE:EF:01:02,bridge=vmbr0
ostype: l26
parent: before-upgrade
scsi0: local-zfs:vm-102-disk-0,discard=on,size=32G
scsihw: virtio-scsi-pci
smbios1: uuid=6d1c7b0e-5c55-4d2b-9d6c-7f4e0a3b1c02
sockets: 1
vmgenid: 1b7b5d0c-8e2f-4d7a-9a55-0c6e2d9a7f02

[before-upgrade]
agent: 0
boot: order=scsi0
cores: 2
memory: 4096
name: web-1-old
snaptime: 1640000000
vmstate: local-zfs:vm-102-state-before-upgrade
"""

PVE8 = """\
#Legacy ERP%3A the vendor's image has no agent
agent: enabled=0,type=isa
bios: ovmf
boot: order=scsi0
cores: 1
cpu: x86-64-v2-AES
efidisk0: local-lvm:vm-103-disk-0,efitype=4m,pre-enrolled-keys=1,size=4M
machine: q35
memory: 2048
meta: creation-qemu=8.1.5,ctime=1710000000
name: legacy-erp
net0: virtio=BC:24:11:00:01:03,bridge=vmbr0
ostype: win10
scsi0: local-lvm:vm-103-disk-1,iothread=1,size=40G
scsihw: virtio-scsi-single
smbios1: uuid=6d1c7b0e-5c55-4d2b-9d6c-7f4e0a3b1c03
sockets: 1
vmgenid: 1b7b5d0c-8e2f-4d7a-9a55-0c6e2d9a7f03

[PENDING]
agent: 1
name: erp-new

[special:cloudinit]
ipconfig0: ip=dhcp
name: from-cloudinit
"""

NO_AGENT_LINE = "cores: 1\nmemory: 512\nname: tiny\n"
HOSTILE = "name: ../../etc/passwd\x1b[31m;rm -rf /$(reboot)\nagent: 1\n"


@pytest.mark.parametrize(
    ("text", "name", "enabled", "setting"),
    [
        (PVE6, "db-primary", True, "1"),
        (PVE7, "web-1", True, "1,fstrim_cloned_disks=1"),
        (PVE8, "legacy-erp", False, "enabled=0,type=isa"),
        (NO_AGENT_LINE, "tiny", False, None),
    ],
    ids=["pve6", "pve7-snapshot", "pve8-pending-cloudinit", "no-agent-line"],
)
def test_config_name_and_agent_from_the_guests_own_section(
    text: str, name: str, enabled: bool, setting: str | None
) -> None:
    guest = parse_config("101", text)
    assert guest.name == name  # not a snapshot's, pending or cloud-init name
    assert guest.agent_enabled is enabled
    assert guest.agent_setting == setting
    assert guest.title == f"{name} (101)"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        ("1", True),
        ("0", False),
        ("1,fstrim_cloned_disks=1", True),
        ("enabled=1,freeze-fs-on-backup=0", True),
        ("enabled=0", False),
        ("type=virtio,enabled=1", True),
        ("type=virtio", False),
        ("", False),
        (None, False),
    ],
)
def test_agent_property_string(value: str | None, enabled: bool) -> None:
    assert agent_enabled(value) is enabled


def test_hostile_name_is_plain_safe_text() -> None:
    guest = parse_config("104", HOSTILE)
    assert guest.name is not None
    assert set(guest.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
    assert "/" not in guest.title and "\x1b" not in guest.title and "$" not in guest.title
    assert len(parse_config("105", "name: " + "x" * 5000).name or "") == 63
    assert parse_config("106", "name: \x00\x01\n").name is None  # nothing left: the vmid
    assert parse_config("106", "name: \x00\x01\n").title == "106"


def test_configs_output_is_parsed_by_record_and_capped() -> None:
    out = b"101\x001\x00" + PVE6.encode() + b"\x00" + b"x1\x000\x00name: bad\x00"
    out += b"103\x00?\x00" + PVE8.encode() + b"\x00" + b"999\x000\x00"  # a truncated tail
    guests = parse_configs_output(out)
    assert set(guests) == {"101", "103"}
    assert guests["101"].running is True and guests["101"].name == "db-primary"
    assert guests["103"].running is None and not guests["103"].agent_enabled


# -- through a real sshd ---------------------------------------------------------------


def test_configs_script_quotes_the_directories() -> None:
    script = configs_script("/etc/pve/qemu-server; reboot", "/run/x")
    assert "'/etc/pve/qemu-server; reboot'/*.conf" in script


@pytest.mark.real_sshd
@pytest.mark.real_agent
async def test_proxmox_guests_by_name_through_sshd(
    sshd: SshServer, real_agent_factory: Callable[..., list[RealAgent]]
) -> None:
    agents = real_agent_factory(2, ["vm101", "vm102"])
    root = short_temp_dir("pve-")
    conf, run = root / "qemu-server", root / "run"
    conf.mkdir()
    run.mkdir()
    for vmid, text in (("101", PVE6), ("102", PVE7), ("103", PVE8), ("104", HOSTILE)):
        (conf / f"{vmid}.conf").write_text(text)
    (conf / "notes.txt").write_text("name: not-a-guest\n")
    for vmid, agent in (("101", agents[0]), ("102", agents[1])):
        (run / f"{vmid}.qga").symlink_to(agent.socket)
    # 101-103 run (their pidfiles name this live process), 104 does not (a dead pid).
    for vmid in ("101", "102", "103"):
        (run / f"{vmid}.pid").write_text(f"{os.getpid()}\n")
    (run / "104.pid").write_text("999999999\n")
    hv = SshHypervisor("pve1", sshd.target(), proxmox_configs=str(conf))
    try:
        found = {a.name: a.address for a in await hv.discover([f"{run}/*.qga"])}
        stopped_title = parse_config("104", HOSTILE).title
        assert found == {
            "db-primary (101)": f"{run}/101.qga",
            "web-1 (102)": f"{run}/102.qga",
            "legacy-erp (103)": f"{run}/103.qga",  # running, agent disabled: listed
            stopped_title: f"{run}/104.qga",  # stopped: listed, as Proxmox lists it
        }
        # Proxmox as the manager: each guest's state from its pidfile.
        assert isinstance(hv, ManagedHypervisor) and hv.manager == "proxmox"
        assert hv.domain_state(f"{run}/101.qga") == "running"
        assert hv.domain_state(f"{run}/104.qga") == "stopped"
        with pytest.raises(AgentConnectionError, match="proxmox: stopped"):
            await hv.endpoint(f"{run}/104.qga").connect(10)  # no channel opened to learn it
        row = VmSnapshot(VmRef("pve1", stopped_title, f"{run}/104.qga"), AgentState.UNREACHABLE)
        shown = with_manager_state(row, hv.domain_state(row.ref.address), hv.manager)
        assert (shown.agent, shown.error) == (AgentState.STOPPED, "proxmox: stopped")
        # Started: the next discovery tells the listeners (no event stream on Proxmox).
        changes: list[tuple[str, str]] = []
        hv.on_domain_state(lambda address, state: changes.append((address, state)))
        (run / "104.pid").write_text(f"{os.getpid()}\n")
        (run / "104.qga").symlink_to(agents[1].socket)  # QEMU makes its agent socket
        await hv.discover([f"{run}/*.qga"])
        assert changes == [(f"{run}/104.qga", "running")]
        caller = await hv.endpoint(found["db-primary (101)"]).connect(10)
        assert await caller.call("guest-ping", timeout=5) == {}
        await caller.close()
        # The disabled agent says so at once, naming the file and the setting.
        with pytest.raises(AgentConnectionError) as caught:
            await hv.endpoint(found["legacy-erp (103)"]).connect(10)
        message = str(caught.value)
        assert "pve1/legacy-erp (103)" in message and "disabled" in message
        assert f"{conf}/103.conf (agent: enabled=0,type=isa)" in message
    finally:
        await hv.close()


@pytest.mark.real_sshd
async def test_unreadable_configs_leave_vmids(sshd: SshServer, tmp_path: Path) -> None:
    """No configs where they are looked for: the guests keep their vmids, no error."""
    run = short_temp_dir("pve-")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(run / "201.qga"))
        hv = SshHypervisor("pve2", sshd.target(), proxmox_configs=str(tmp_path / "none"))
        try:
            found = await hv.discover([f"{run}/*.qga"])
            assert [(a.name, a.address) for a in found] == [("201", f"{run}/201.qga")]
        finally:
            await hv.close()
