"""Start, watch and stop real QEMU guests running the real qemu-ga.

Each ``Guest`` is one ``qemu-system-x86_64`` process with: the agent channel on a
UNIX socket (exactly the chardev of protocol.md), a QMP socket to read the VM's
state, an ext4 data disk (so fsfreeze has something real to freeze), an optional
swap disk (for suspend-to-disk) and the serial console in a log file, whose tail is
put into every boot error because it is the only way to see what a guest did.

Every started process is stopped by pid: by ``stop()``, by the fixtures at
teardown, by an ``atexit`` hook, and — should the test process be SIGKILLed — by
the kernel, through ``setpriv --pdeathsig KILL``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .agent import RawAgent, open_agent, wait_for_agent
from .image import GuestImage
from .qmp import qmp_command

Accel = Literal["kvm", "tcg"]
KernelKind = Literal["pvh", "bzimage"]

BOOT_TIMEOUT = 60.0
KVM_PROBE_TIMEOUT = float(os.environ.get("QGADASH_KVM_PROBE_TIMEOUT", "4"))
QEMU = "qemu-system-x86_64"
INIT_STARTED = "qgadash-init: start"
INIT_READY = "qgadash-init: ready"
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; keep a margin


class GuestError(RuntimeError):
    """A guest failed to boot, or died; the message ends with its console tail."""


@dataclass(frozen=True)
class GuestSpec:
    """What to boot. Defaults give an agent guest booted the fast way (PVH vmlinux).

    ``kernel="bzimage"`` is slower to boot but the only kind that resumes from
    suspend-to-RAM (a PVH-booted guest reboots instead, guests.md). ``reboot=False``
    passes ``-no-reboot``: a guest reboot or panic ends QEMU.
    """

    name: str = "guest"
    hostname: str | None = None
    ip: str = "10.0.2.15/24"
    agent: bool = True
    kernel: KernelKind = "pvh"
    memory_mb: int = 128
    swap_mb: int = 0
    data_mb: int = 16
    reboot: bool = False
    verbose_agent: bool = False
    extra_qemu_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # These end up in QEMU's option syntax and on the kernel command line,
        # where a comma or a space would silently change their meaning.
        for label, value in (("name", self.name), ("hostname", self.hostname or self.name)):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", value):
                raise ValueError(f"invalid guest {label}: {value!r}")
        ipaddress.IPv4Interface(self.ip)  # raises ValueError if malformed


_LIVE: set[Guest] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        guests = list(_LIVE)
    for guest in guests:
        guest.stop()


atexit.register(_stop_all_live)


def live_guests() -> list[Guest]:
    """Guests started in this process and not yet stopped (teardown checks use it)."""
    with _LIVE_LOCK:
        return list(_LIVE)


def _read_tail(path: Path, max_lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read()
    except OSError:
        return "(no console log)"
    text = data.decode("utf-8", "replace").replace("\r", "")
    return "\n".join(text.splitlines()[-max_lines:])


def _make_data_disk(path: Path, size_mb: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "data", str(path)],
        check=True,
        capture_output=True,
    )


class Guest:
    """One QEMU guest. ``start()`` launches it, ``wait_ready()`` waits for its agent.

    As a context manager it boots on entry and stops on exit.
    """

    def __init__(
        self,
        spec: GuestSpec,
        image: GuestImage,
        workdir: Path,
        accel: Accel | None = None,
    ) -> None:
        self.spec = spec
        self.image = image
        self.workdir = Path(workdir) / spec.name
        self._accel = accel
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self._stop_lock = threading.Lock()
        self.started_at: float | None = None
        self.ready_seconds: float | None = None
        """Seconds from process start until the agent answered (or init ran)."""

    # -- identity -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hostname(self) -> str:
        return self.spec.hostname or self.spec.name

    @property
    def ip(self) -> str:
        """The IPv4 address (without prefix length) of the guest's dummy0."""
        return self.spec.ip.split("/", 1)[0]

    @property
    def accel(self) -> Accel:
        if self._accel is None:
            self._accel = select_accel(self.image)
        return self._accel

    # -- paths --------------------------------------------------------------------
    def _sockets(self) -> Path:
        """Where the sockets live: the workdir unless its path is too long for AF_UNIX."""
        if self._socket_dir is None:
            if len(str(self.workdir / "qga.sock")) <= _SUN_PATH_MAX:
                self._socket_dir = self.workdir
            else:
                self._socket_dir = Path(
                    tempfile.mkdtemp(prefix=f"qga-{self.name[:16]}-", dir="/tmp")
                )
        return self._socket_dir

    @property
    def agent_socket(self) -> Path:
        return self._sockets() / "qga.sock"

    @property
    def qmp_socket(self) -> Path:
        return self._sockets() / "qmp.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own stdout/stderr (command-line errors end up here)."""
        return self.workdir / "qemu.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle ----------------------------------------------------------------
    def command_line(self) -> list[str]:
        spec = self.spec
        kernel = self.image.bzimage
        if spec.kernel == "pvh" and self.image.vmlinux is not None:
            kernel = self.image.vmlinux
        append = [
            "console=ttyS0",
            "panic=-1",
            "cryptomgr.notests",
            f"qga.hostname={self.hostname}",
            f"qga.ip={spec.ip}",
            f"qga.agent={int(spec.agent)}",
        ]
        if spec.verbose_agent:
            append.append("qga.verbose=1")
        cmd = [
            QEMU,
            "-name", spec.name,
            "-accel", self.accel,
            "-m", str(spec.memory_mb),
            "-smp", "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-monitor", "none",
            "-kernel", str(kernel),
            "-initrd", str(self.image.initrd),
            "-append", " ".join(append),
            "-chardev", f"file,id=con0,path={self.console_log}",
            "-serial", "chardev:con0",
            "-chardev", f"socket,id=qga0,path={self.agent_socket},server=on,wait=off",
            "-device", "virtio-serial",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-drive", f"file={self.workdir / 'data.img'},if=none,id=data,format=raw",
            "-device", "virtio-blk-pci,drive=data,serial=data",
        ]  # fmt: skip
        if not spec.reboot:
            cmd.append("-no-reboot")
        if spec.swap_mb:
            cmd += [
                "-drive", f"file={self.workdir / 'swap.img'},if=none,id=swap,format=raw",
                "-device", "virtio-blk-pci,drive=swap,serial=swap",
            ]  # fmt: skip
        cmd += spec.extra_qemu_args
        return cmd

    def start(self) -> None:
        """Launch QEMU (non-blocking). Call from a long-lived thread (see module doc)."""
        if self._proc is not None:
            raise RuntimeError(f"guest {self.name} already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in (self.agent_socket, self.qmp_socket, self.console_log):
            stale.unlink(missing_ok=True)
        _make_data_disk(self.workdir / "data.img", self.spec.data_mb)
        if self.spec.swap_mb:
            with (self.workdir / "swap.img").open("wb") as fh:
                fh.truncate(self.spec.swap_mb * 1024 * 1024)
        cmd = self.command_line()
        # PDEATHSIG fires when the *thread* that forked exits, so only arm it from
        # the main thread; other callers rely on stop()/atexit.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        with self.qemu_log.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Block until the agent answers a sync (or, without agent, init has run).

        Returns the seconds since start. Raises GuestError with the console tail.
        """
        if self._proc is None or self.started_at is None:
            raise RuntimeError(f"guest {self.name} not started")
        deadline = self.started_at + timeout
        try:
            if self.spec.agent:
                wait_for_agent(self.agent_socket, deadline, self.is_running)
            else:
                self._wait_console(INIT_READY, deadline)
        except (OSError, TimeoutError) as exc:
            raise self.error(f"guest {self.name} not ready after {timeout:.0f} s: {exc}") from exc
        self.ready_seconds = time.monotonic() - self.started_at
        return self.ready_seconds

    def _wait_console(self, marker: str, deadline: float) -> None:
        needle = marker.encode()
        while time.monotonic() < deadline:
            try:
                if needle in self.console_log.read_bytes():
                    return
            except FileNotFoundError:
                pass
            if not self.is_running():
                raise ConnectionError("the VM exited")
            time.sleep(0.05)
        raise TimeoutError(f"{marker!r} not seen on the console")

    def error(self, message: str, lines: int = 40) -> GuestError:
        """A GuestError carrying QEMU's log and the console tail (for failed tests)."""
        parts = [message, f"-- pid {self.pid}, accel {self._accel}, workdir {self.workdir}"]
        qemu_out = _read_tail(self.qemu_log, 10).strip()
        if qemu_out:
            parts += ["-- qemu output:", qemu_out]
        parts += [f"-- console tail ({self.console_log}):", self.console_tail(lines)]
        return GuestError("\n".join(parts))

    def console_tail(self, lines: int = 40) -> str:
        return _read_tail(self.console_log, lines)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """QEMU's exit code, or None if it is still running after ``timeout`` seconds."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Quit QEMU (QMP ``quit``, then SIGKILL by pid). Safe to call repeatedly."""
        with self._stop_lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                # QMP gone or wedged: the kill below handles it.
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    qmp_command(self.qmp_socket, "quit", timeout=2.0)
                try:
                    proc.wait(3.0)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._socket_dir is not None and self._socket_dir != self.workdir:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> Guest:
        if self._proc is None:
            self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Guest {self.name} pid={self.pid} running={self.is_running()}>"

    # -- QMP and agent ------------------------------------------------------------
    def qmp(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> Any:
        """Run a QMP command; returns its ``return`` member, raises QMPError on error."""
        return qmp_command(self.qmp_socket, command, arguments, timeout)

    def status(self) -> str:
        """``query-status``'s status: "running", "paused", "suspended", "shutdown"..."""
        return str(self.qmp("query-status")["status"])

    def wakeup(self) -> None:
        """Wake a guest suspended to RAM (``system_wakeup``)."""
        self.qmp("system_wakeup")

    def agent(self, timeout: float = 5.0) -> RawAgent:
        """A connected, synced raw agent client (close it: the socket is exclusive)."""
        return open_agent(self.agent_socket, timeout)

    def rss_bytes(self) -> int | None:
        """Resident memory of the QEMU process, for cost measurements."""
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


_ACCEL: Accel | None = None
_ACCEL_LOCK = threading.Lock()


def _probe_kvm(image: GuestImage) -> bool:
    """Boot to the first line of /init under KVM within a short timeout.

    /dev/kvm existing proves nothing here: nested KVM hangs in the decompressor or
    fails on MSRs (guests.md), so only a guest reaching userspace counts.
    """
    with tempfile.TemporaryDirectory(prefix="qgadash-kvm-probe-") as tmp:
        guest = Guest(GuestSpec(name="kvm-probe", agent=False, data_mb=4), image, Path(tmp), "kvm")
        try:
            guest.start()
            guest._wait_console(INIT_STARTED, time.monotonic() + KVM_PROBE_TIMEOUT)
            return True
        except (OSError, TimeoutError, subprocess.SubprocessError):
            return False
        finally:
            guest.stop()


def select_accel(image: GuestImage) -> Accel:
    """``kvm`` if a probe guest boots with it, else ``tcg``; decided once per process.

    ``QGADASH_GUEST_ACCEL=kvm|tcg`` skips the probe.
    """
    global _ACCEL
    with _ACCEL_LOCK:
        if _ACCEL is None:
            forced = os.environ.get("QGADASH_GUEST_ACCEL", "")
            if forced in ("kvm", "tcg"):
                _ACCEL = forced  # type: ignore[assignment]
            elif os.access("/dev/kvm", os.R_OK | os.W_OK) and _probe_kvm(image):
                _ACCEL = "kvm"
            else:
                _ACCEL = "tcg"
        assert _ACCEL is not None
        return _ACCEL


def start_guests(
    specs: Sequence[GuestSpec],
    workdir: Path,
    image: GuestImage | None = None,
    timeout: float = BOOT_TIMEOUT,
) -> list[Guest]:
    """Boot several guests in parallel and return them once every one is ready.

    On any failure all of them are stopped and the first GuestError is raised.
    Names must be unique (each gets ``workdir/NAME``).
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"guest names must be unique: {names}")
    if image is None:
        from .image import ensure_image

        image = ensure_image()
    accel = select_accel(image)
    guests = [Guest(spec, image, workdir, accel) for spec in specs]
    pool = concurrent.futures.ThreadPoolExecutor(max(1, len(guests)))
    try:
        for guest in guests:
            guest.start()
        futures = [pool.submit(g.wait_ready, timeout) for g in guests]
        for future in concurrent.futures.as_completed(futures):
            future.result()
    except BaseException:
        # Stopping every guest first makes the other waits end now, not at the
        # deadline (also on KeyboardInterrupt).
        for guest in guests:
            guest.stop()
        raise
    finally:
        pool.shutdown(wait=True)
    return guests
