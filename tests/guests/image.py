"""Build (once per machine) the kernel + initramfs that the test guests boot.

Everything comes from Debian packages already on the host (guests.md): the kernel
of ``linux-image-amd64``, ``busybox-static``, the real ``/usr/sbin/qemu-ga`` with
its libraries, and a handful of kernel modules. Nothing is downloaded. The result is
cached under ``$QGADASH_GUEST_CACHE`` (default ``~/.cache/qgadash/guests``) in a
directory named after a hash of the inputs, so a new kernel, agent, busybox or init
script gives a new image while an unchanged machine reuses the old one.

Building is atomic (a temporary directory renamed into place) and serialised by a
lock file, so two pytest processes racing to build end up sharing one image.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._cpio import CpioTree
from ._kernel import decompress_module, extract_vmlinux, strip_module_signature

QEMU_GA = Path("/usr/sbin/qemu-ga")
BUSYBOX = Path("/bin/busybox")
MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "ext4", "dummy")
_GUESTFS = Path(__file__).with_name("guestfs")
# Bump when the layout of the cache directory changes.
_FORMAT = "1"

OS_RELEASE = (
    b'PRETTY_NAME="qgadash test guest 1.0"\n'
    b'NAME="qgadash test guest"\n'
    b'VERSION_ID="1.0"\n'
    b'VERSION="1.0 (busybox)"\n'
    b"ID=qgadash-guest\n"
    b"ID_LIKE=debian\n"
)

KNOWN_FILES: dict[str, bytes] = {
    "/etc/os-release": OS_RELEASE,
    "/etc/qgadash/hello.txt": b"hello from the qgadash test guest\n",
    # Larger than the agent's default 4 KiB read, to exercise chunked reads.
    "/etc/qgadash/blob-64k.bin": bytes(range(256)) * 256,
}
"""Files with known content baked into every guest, for read tests."""

_INITTAB = b"""\
# Written at build time; /init appends the qemu-ga respawn line unless qga.agent=0.
::sysinit:/bin/true
::shutdown:/bin/sync
"""
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/home/tester:/bin/sh\n"
_GROUP = b"root:x:0:\ntester:x:1000:\n"
_SHADOW = b"root:*:19000:0:99999:7:::\ntester:*:19000:0:99999:7:::\n"


@dataclass(frozen=True)
class GuestImage:
    """Paths of a built guest: boot ``vmlinux`` (PVH, fast) or ``bzimage`` (S3-safe)."""

    bzimage: Path
    vmlinux: Path | None
    initrd: Path


class GuestImageError(RuntimeError):
    """The host lacks something needed to build the guest image."""


def cache_root() -> Path:
    env = os.environ.get("QGADASH_GUEST_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "qgadash" / "guests"


def _version_key(release: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-]", release)]


def find_kernel() -> tuple[str, Path]:
    """The newest ``/boot/vmlinuz-*`` that has its modules installed.

    The host's running kernel is irrelevant (CI runs in containers/VMs with their
    own kernels); what matters is the Debian kernel package on disk.
    """
    override = os.environ.get("QGADASH_GUEST_KERNEL")
    candidates = [Path(override)] if override else sorted(Path("/boot").glob("vmlinuz-*"))
    usable = [
        (p.name.removeprefix("vmlinuz-"), p)
        for p in candidates
        if p.is_file()
        and Path("/lib/modules", p.name.removeprefix("vmlinuz-"), "modules.dep").exists()
    ]
    if not usable:
        raise GuestImageError(
            "no kernel: need /boot/vmlinuz-VER and /lib/modules/VER"
            " (apt-get install linux-image-amd64)"
        )
    return max(usable, key=lambda rp: _version_key(rp[0]))


def missing_prerequisites() -> list[str]:
    """Human-readable list of what is missing to build and boot guests (empty if none)."""
    missing: list[str] = []
    for tool, pkg in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("modprobe", "kmod"),
        ("mkfs.ext4", "e2fsprogs"),
        ("ldd", "libc-bin"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {pkg})")
    if not QEMU_GA.is_file():
        missing.append(f"{QEMU_GA} (Debian package qemu-guest-agent)")
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} (Debian package busybox-static)")
    try:
        _, vmlinuz = find_kernel()
        if not os.access(vmlinuz, os.R_OK):
            missing.append(f"read access to {vmlinuz} (run as root)")
    except GuestImageError as exc:
        missing.append(str(exc))
    return missing


def _dpkg_versions(packages: list[str]) -> dict[str, str]:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    versions = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {p: versions.get(p, "?") for p in packages}


def _inputs(release: str, vmlinuz: Path) -> dict[str, object]:
    """Everything the image depends on; its hash names the cache entry."""
    here = Path(__file__)
    sources = [
        *sorted(_GUESTFS.iterdir()),
        here,
        here.with_name("_cpio.py"),
        here.with_name("_kernel.py"),
    ]
    files = {}
    for p in (vmlinuz, QEMU_GA, BUSYBOX):
        st = p.stat()
        files[str(p)] = [st.st_size, st.st_mtime_ns]
    return {
        "format": _FORMAT,
        "kernel": release,
        "packages": _dpkg_versions(
            ["busybox-static", "qemu-guest-agent", f"linux-image-{release}"]
        ),
        "files": files,
        "sources": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources},
    }


def _shared_libraries(binary: Path) -> list[Path]:
    """Libraries and the dynamic loader ``ldd`` lists (empty for static binaries)."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs: list[Path] = []
    for line in proc.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
        elif "=> not found" in line:
            raise GuestImageError(f"{binary}: missing library: {line.strip()}")
    return libs


def _module_paths(release: str) -> list[Path]:
    """Module files for MODULES and their dependencies, in load order, without duplicates."""
    ordered: list[Path] = []
    for name in MODULES:
        proc = subprocess.run(
            ["modprobe", "-S", release, "--show-depends", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise GuestImageError(f"modprobe --show-depends {name}: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            parts = line.split()
            # "builtin NAME" lines need nothing; module options (e.g. systemd's
            # numdummies=0 for dummy) are deliberately dropped: /init wants dummy0.
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in ordered:
                    ordered.append(path)
    return ordered


def _add_busybox(tree: CpioTree) -> None:
    tree.file("/bin/busybox", BUSYBOX.read_bytes(), 0o755)
    listing = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    for applet in listing.split():
        if applet in ("linuxrc", "bin/busybox"):
            continue
        tree.symlink("/" + applet, "/bin/busybox")


def _add_agent(tree: CpioTree) -> None:
    tree.file(str(QEMU_GA), QEMU_GA.read_bytes(), 0o755)
    for lib in _shared_libraries(QEMU_GA):
        # Keep the path ldd printed (the loader's search path) and the resolved content.
        tree.file(str(lib), lib.resolve().read_bytes(), 0o755)


def _add_modules(tree: CpioTree, release: str) -> None:
    names: list[str] = []
    for path in _module_paths(release):
        data = decompress_module(path.name, path.read_bytes())
        name = re.sub(r"\.ko(\.\w+)?$", ".ko", path.name)
        tree.file(f"/lib/modules/{name}", strip_module_signature(data))
        names.append(name)
    tree.file("/lib/modules/load-order", "".join(n + "\n" for n in names).encode())


def _add_base(tree: CpioTree) -> None:
    for d in ("proc", "sys", "dev", "run", "data", "root", "home/tester", "var/log", "etc/qgadash"):
        tree.dir("/" + d)
    tree.dir("/tmp", 0o1777)
    tree.symlink("/var/run", "/run")
    tree.symlink("/etc/mtab", "/proc/self/mounts")
    # The kernel opens /dev/console for /init before devtmpfs exists.
    tree.chardev("/dev/console", 5, 1)
    tree.chardev("/dev/null", 1, 3, 0o666)
    tree.file("/init", (_GUESTFS / "init").read_bytes(), 0o755)
    tree.file("/sbin/shutdown", (_GUESTFS / "shutdown").read_bytes(), 0o755)
    tree.file("/usr/sbin/chpasswd", (_GUESTFS / "chpasswd").read_bytes(), 0o755)
    tree.file("/etc/inittab", _INITTAB)
    tree.file("/etc/passwd", _PASSWD)
    tree.file("/etc/group", _GROUP)
    tree.file("/etc/shadow", _SHADOW, 0o600)
    tree.file("/etc/hostname", b"guest\n")
    for path, data in KNOWN_FILES.items():
        tree.file(path, data)


def _build(dest: Path, release: str, vmlinuz: Path, inputs: dict[str, object]) -> None:
    t0 = time.monotonic()
    tree = CpioTree()
    _add_busybox(tree)
    _add_base(tree)  # after busybox: our scripts win over any same-named applet link
    _add_agent(tree)
    _add_modules(tree, release)
    with (dest / "initrd.cpio").open("wb") as out:
        tree.write(out)
    bzimage = vmlinuz.read_bytes()
    (dest / "bzImage").write_bytes(bzimage)
    vmlinux = extract_vmlinux(bzimage)
    if vmlinux is not None:
        (dest / "vmlinux").write_bytes(vmlinux)
    manifest = {"inputs": inputs, "build_seconds": round(time.monotonic() - t0, 3)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _image_at(directory: Path) -> GuestImage | None:
    if not (directory / "manifest.json").exists():
        return None
    vmlinux = directory / "vmlinux"
    return GuestImage(
        bzimage=directory / "bzImage",
        vmlinux=vmlinux if vmlinux.exists() else None,
        initrd=directory / "initrd.cpio",
    )


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


KEEP_ENTRIES = 3


def _prune(root: Path, keep: Path) -> None:
    """Drop all but the KEEP_ENTRIES most recently used images (~80 MB each).

    Entries are touched on every use, so one a concurrent session just picked is
    among the newest and survives; QEMU reads kernel and initrd only at start.
    Lock files (empty) stay: deleting one another process holds would break locking.
    """
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[KEEP_ENTRIES - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
    # Half-built directories of killed builds (a live build is never this old).
    for stale in root.glob(".build-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)


def ensure_image(cache_dir: Path | None = None) -> GuestImage:
    """Return the cached guest image for this machine, building it first if needed.

    Cold builds take a few seconds (mostly decompressing the kernel); warm calls
    only hash the inputs. Raises GuestImageError when prerequisites are missing.
    """
    missing = missing_prerequisites()
    if missing:
        raise GuestImageError("cannot build guest image, missing: " + "; ".join(missing))
    release, vmlinuz = find_kernel()
    inputs = _inputs(release, vmlinuz)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir or cache_root()
    final = root / f"{release}-{key}"
    image = _image_at(final)
    if image is not None:
        os.utime(final)  # "recently used", for _prune
        return image
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{key}.lock"):
        image = _image_at(final)  # another process may have built it meanwhile
        if image is not None:
            return image
        if final.exists():  # incomplete leftovers (manifest is written last)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        try:
            _build(tmp, release, vmlinuz, inputs)
            tmp.chmod(0o755)  # mkdtemp's 0700 would lock out other users of a shared cache
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(root, final)
    image = _image_at(final)
    assert image is not None
    return image
