"""A real libvirtd (qemu:///system) for integration tests, set up as guests.md describes.

Register with `pytest_plugins = ["tests.integration.libvirtd"]` for the session-wide
fixture `libvirtd`, or use `running_libvirtd()` directly. A `Libvirtd` starts transient
TCG domains from the tests/guests image (`start_guest`) and destroys them at stop().

What start() does, all of it undone at stop() (by pid, never by name):
- the `libvirt-qemu` user and group (libvirtd refuses to start without them), left in
  place since other tools may rely on them once created;
- `/var/log/libvirt`, `/var/lib/libvirt`, `/run/libvirt`;
- `/etc/libvirt/qemu.conf` with user/group root, no dynamic ownership, no security
  driver, no cgroups, no namespaces (restored or removed at stop);
- `virtlogd -d -p PIDFILE`, then `libvirtd -d -f CONF -p PIDFILE`, then a poll of
  `virsh -c qemu:///system version`.
A libvirtd that already answers is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

from tests.integration.realagent import missing_peer

URI = "qemu:///system"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_CONF_TEXT = """\
# Written by qgadash's test fixture (tests/integration/libvirtd.py).
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def require_libvirt() -> None:
    for binary, package in (
        ("/usr/sbin/libvirtd", "libvirt-daemon"),
        ("/usr/sbin/virtlogd", "libvirt-daemon"),
        ("/usr/bin/virsh", "libvirt-clients"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ):
        if not os.access(binary, os.X_OK):
            missing_peer(binary, package)
    driver = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
    if not Path(driver).exists():
        missing_peer("libvirt's QEMU driver", "libvirt-daemon-driver-qemu")
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the libvirtd fixture needs root", pytrace=False)
        pytest.skip("the libvirtd fixture needs root")


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def _answers() -> bool:
    try:
        return virsh("version", check=False, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Running (a daemon's zombie, which PID 1 may be slow to reap, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _stop_pid(pid: int | None, timeout: float = 10) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _ensure_account() -> None:
    if subprocess.run(["getent", "group", "libvirt-qemu"], capture_output=True).returncode:
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "-g",
                "libvirt-qemu",
                "-s",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
        )


def domain_xml(
    name: str,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    disk: Path | None = None,
    *,
    memory_mib: int = 128,
    agent_channel: bool = True,
) -> str:
    """A transient TCG domain booting `kernel` directly, with the agent channel (guests.md)."""
    disk_xml = ""
    if disk is not None:
        disk_xml = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
      <serial>data</serial>
    </disk>"""
    channel_xml = ""
    if agent_channel:
        channel_xml = """
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>"""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk_xml}{channel_xml}
    <serial type='file'><source path={quoteattr(f"/var/log/libvirt/qemu/{name}.console")}/>
      <target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@dataclass
class Libvirtd:
    directory: Path
    started: bool = False
    libvirtd_pid: int | None = None
    virtlogd_pid: int | None = None
    qemu_conf_backup: str | None = None
    wrote_qemu_conf: bool = False
    domains: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return URI

    def start(self, timeout: float = 60) -> None:
        require_libvirt()
        if _answers():
            return
        _ensure_account()
        for d in ("/var/log/libvirt", "/var/log/libvirt/qemu", "/var/lib/libvirt", "/run/libvirt"):
            Path(d).mkdir(parents=True, exist_ok=True)
        if QEMU_CONF.exists():
            current = QEMU_CONF.read_text()
            if current != QEMU_CONF_TEXT:
                self.qemu_conf_backup = current
        QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
        if not QEMU_CONF.exists() or self.qemu_conf_backup is not None:
            QEMU_CONF.write_text(QEMU_CONF_TEXT)
            self.wrote_qemu_conf = True
        conf = self.directory / "libvirtd.conf"
        conf.write_text(f'log_outputs = "3:file:{self.directory}/libvirtd.log"\n')
        virtlogd_pidfile = self.directory / "virtlogd.pid"
        subprocess.run(["virtlogd", "-d", "-p", str(virtlogd_pidfile)], check=True)
        self.virtlogd_pid = _read_pid(virtlogd_pidfile)
        libvirtd_pidfile = self.directory / "libvirtd.pid"
        subprocess.run(["libvirtd", "-d", "-f", str(conf), "-p", str(libvirtd_pidfile)], check=True)
        self.started = True
        deadline = time.monotonic() + timeout
        while not _answers():
            self.libvirtd_pid = _read_pid(libvirtd_pidfile)
            if time.monotonic() > deadline:
                log = (self.directory / "libvirtd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"libvirtd did not answer within {timeout} s: {log}")
            time.sleep(0.1)
        self.libvirtd_pid = _read_pid(libvirtd_pidfile)

    def create(self, xml: str) -> str:
        """`virsh create` a transient domain; returns its name, destroyed at stop()."""
        path = self.directory / f"domain-{uuid.uuid4().hex[:8]}.xml"
        path.write_text(xml)
        out = virsh("create", str(path)).stdout
        # "Domain 'NAME' created from FILE"
        name = out.split("'")[1]
        self.domains.append(name)
        return name

    def start_guest(
        self, kernel: Path, initrd: Path, name: str, *, agent: bool = True, ip: str = "10.0.2.15/24"
    ) -> str:
        """A TCG test guest (tests/guests image) with an ext4 data disk; returns its name.

        `agent=False` boots it with `qga.agent=0`: the channel exists, no agent runs.
        """
        disk = self.directory / f"{name}-data.img"
        with disk.open("wb") as fh:
            fh.truncate(16 * 1024 * 1024)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "data", str(disk)], check=True, capture_output=True
        )
        console = Path(f"/var/log/libvirt/qemu/{name}.console")
        console.unlink(missing_ok=True)
        cmdline = (
            f"console=ttyS0 panic=-1 cryptomgr.notests qga.hostname={name} qga.ip={ip} "
            f"qga.agent={int(agent)}"
        )
        return self.create(domain_xml(name, kernel, initrd, cmdline, disk))

    def console(self, name: str) -> str:
        try:
            return Path(f"/var/log/libvirt/qemu/{name}.console").read_text(errors="replace")
        except OSError:
            return ""

    def wait_booted(self, name: str, timeout: float = 90) -> None:
        """Until the guest's /init says it is ready, and (if it runs one) its agent answers."""
        deadline = time.monotonic() + timeout
        while "qgadash-init: ready" not in self.console(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not boot: {self.console(name)[-2000:]}")
            time.sleep(0.2)
        if "agent=1" not in self.console(name):
            return
        while True:
            ping = virsh(
                "qemu-agent-command", name, '{"execute":"guest-ping"}', "--timeout", "2",
                check=False,
            )  # fmt: skip
            if ping.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: agent never answered: {ping.stderr.strip()}")
            time.sleep(0.3)

    def destroy(self, name: str) -> None:
        virsh("destroy", name, check=False)
        with contextlib.suppress(ValueError):
            self.domains.remove(name)

    def domain_state(self, name: str) -> str:
        proc = virsh("domstate", name, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "gone"

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.domains))) as pool:
            list(pool.map(self.destroy, list(self.domains)))
        if not self.started:
            return
        _stop_pid(self.libvirtd_pid)
        _stop_pid(self.virtlogd_pid)
        if self.wrote_qemu_conf:
            if self.qemu_conf_backup is not None:
                QEMU_CONF.write_text(self.qemu_conf_backup)
            else:
                QEMU_CONF.unlink(missing_ok=True)
        self.started = False


@contextlib.contextmanager
def running_libvirtd() -> Iterator[Libvirtd]:
    """A libvirtd for the duration of the block (an already running one is reused)."""
    directory = Path(tempfile.mkdtemp(prefix="qgadash-libvirtd-", dir="/tmp"))
    daemon = Libvirtd(directory)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    with running_libvirtd() as daemon:
        yield daemon
