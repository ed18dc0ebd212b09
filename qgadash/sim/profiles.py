"""What a simulated guest looks like, and how its agent misbehaves.

A `GuestProfile` is plain frozen data: the facts a real guest would report through
qemu-ga (hostname, OS, NICs, filesystems, users, files). `make_profile` derives varied,
deterministic guests from an index and a seed; `demo_fleet` picks the fleet shown by
`qgadash --demo`. Faults (`Fault`) are separate from profiles so any guest can be given
any fault.

Over 500 lines because most of it is data: the demo fleet's operating systems, the
agent eras' command sets and the faults, as plain frozen values.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass

__all__ = [
    "Disk",
    "Era",
    "Fault",
    "Filesystem",
    "GuestFile",
    "GuestProfile",
    "GuestUser",
    "IpAddress",
    "NetInterface",
    "OsInfo",
    "demo_fleet",
    "era_profile",
    "hostile_name",
    "hostile_text",
    "make_profile",
    "markup_profile",
]


class Fault(enum.Enum):
    """How a simulated agent misbehaves. The value is the name used on the command line."""

    NONE = "none"
    SILENT = "silent"  # accepts, reads, never answers (a guest with no agent running)
    SLOW = "slow"  # every reply 0.2 s late: a slow poll that still answers in time
    GARBAGE = "garbage"  # answers every request with bytes that are not JSON
    DISCONNECT = "disconnect"  # syncs, then closes half-way through the next reply
    OVERSIZE = "oversize"  # replies of 17 MiB (one huge string), streamed
    FROZEN = "frozen"  # filesystems frozen from the start
    MARKUP = "markup"  # Rich markup and terminal escapes in every free-text string
    INVALID_UTF8 = "invalid-utf8"  # raw invalid UTF-8 bytes inside JSON strings
    HUGE_REPLY = "huge-reply"  # a 100 MB reply (a long array), streamed in chunks
    ENDLESS = "endless"  # after the first request, bytes without a newline, forever
    DEEP_NESTING = "deep-nesting"  # replies nested 100,000 arrays deep
    OUT_OF_RANGE = "out-of-range"  # negative sizes, 2**80, "NaN" strings, wrong types
    WRONG_IDS = "wrong-ids"  # every reply carries an id nobody asked for
    REPEATED_IDS = "repeated-ids"  # every reply is sent twice
    FF_FLOOD = "ff-flood"  # 64 KiB of 0xFF before every reply
    LATE_REPLY = "late-reply"  # every reply 4 s late (just past a 3 s timeout)
    SYNC_ONLY = "sync-only"  # answers guest-sync-delimited and nothing else
    ACCEPT_CLOSE = "accept-close"  # accepts a connection and closes it at once

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`Fault.parse("invalid_utf8")` and `Fault.parse("INVALID-UTF8")` both work."""
        wanted = text.strip().lower().replace("_", "-")
        for fault in cls:
            if fault.value == wanted:
                return fault
        names = ", ".join(f.value for f in cls)
        raise ValueError(f"unknown fault {text!r}; expected one of: {names}")


@dataclass(frozen=True, slots=True)
class IpAddress:
    address: str
    prefix: int
    family: str = "ipv4"  # "ipv4" | "ipv6", as in ip-address-type


@dataclass(frozen=True, slots=True)
class NetInterface:
    """A NIC. Counters start at the base values and grow at the given rates (bytes/s)."""

    name: str
    mac: str
    addresses: tuple[IpAddress, ...] = ()
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    statistics: bool = True  # loopback-less dummies and some Windows NICs report none


@dataclass(frozen=True, slots=True)
class Disk:
    dev: str  # "/dev/vda"; on Windows "\\\\.\\PhysicalDrive0"
    bus_type: str = "virtio"  # GuestDiskBusType: virtio, scsi, sata, ide, nvme, ...
    pci_slot: int = 4
    serial: str | None = None
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Filesystem:
    name: str  # "vda1", or a Windows volume GUID path
    mountpoint: str
    type: str
    total_bytes: int
    used_bytes: int
    disk: Disk | None = None


@dataclass(frozen=True, slots=True)
class OsInfo:
    id: str
    name: str
    pretty_name: str
    version: str
    version_id: str
    kernel_release: str
    kernel_version: str
    machine: str = "x86_64"
    variant: str | None = None
    variant_id: str | None = None


@dataclass(frozen=True, slots=True)
class GuestUser:
    name: str
    login_time: float  # seconds since the epoch, a float as the agent sends it
    domain: str | None = None  # Windows only


@dataclass(frozen=True, slots=True)
class GuestFile:
    """One entry of the guest's file tree. `content=None` makes a directory."""

    path: str
    content: bytes | None = b""
    mode: int = 0o644
    mtime: int = 1_732_000_000

    @property
    def is_dir(self) -> bool:
        return self.content is None


@dataclass(frozen=True, slots=True)
class GuestProfile:
    """Everything a simulated guest reports. Frozen, so fleets can share parts of it.

    `/etc/hostname`, `/etc/os-release` and the growing log (`log_path`) are made by the
    agent from these fields; `files` holds the rest of the tree.
    """

    hostname: str
    os: OsInfo
    interfaces: tuple[NetInterface, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    users: tuple[GuestUser, ...] = ()
    timezone: str | None = "UTC"
    tz_offset: int = 0  # seconds east of UTC
    agent_version: str = "7.2.22"
    disabled_commands: frozenset[str] = frozenset()
    windows: bool = False
    files: tuple[GuestFile, ...] = ()
    vcpus: int = 2
    memory_bytes: int = 2 << 30
    load: float = 0.3  # the load average wanders around this
    log_path: str = "/var/log/messages"
    log_interval: float = 2.0  # seconds between two lines of the growing log

    def agent_version_tuple(self) -> tuple[int, ...]:
        parts: list[int] = []
        for piece in self.agent_version.split("."):
            digits = "".join(ch for ch in piece if ch.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)


# --- building blocks shared by many guests (one object per distribution) -----------------

_EPOCH = 1_732_000_000  # mtimes of the static tree: 2024-11-19


def _text(path: str, text: str, mode: int = 0o644, mtime: int = _EPOCH) -> GuestFile:
    return GuestFile(path, text.encode(), mode, mtime)


def _dir(path: str, mode: int = 0o755, mtime: int = _EPOCH) -> GuestFile:
    return GuestFile(path, None, mode, mtime)


def _binary_blob(size: int, salt: int) -> bytes:
    """Deterministic bytes covering every byte value (0x00..0xFF, so also 0xFF)."""
    head = bytes(range(256))
    body = random.Random(salt).randbytes(max(0, size - 256))
    return (head + body)[:size]


_SAMPLE_BINARY = _binary_blob(4096, 7)
_DATA_BLOB = _binary_blob(65536, 11)


def _linux_tree(motd: str) -> tuple[GuestFile, ...]:
    return (
        _dir("/"),
        _dir("/etc"),
        _dir("/home"),
        _dir("/home/ops", 0o750),
        _dir("/root", 0o700),
        _dir("/tmp", 0o1777),
        _dir("/usr"),
        _dir("/usr/bin"),
        _dir("/var"),
        _dir("/var/log"),
        _dir("/data", 0o777),
        _dir("/data/backups"),
        _text("/etc/motd", motd),
        _text("/etc/fstab", "/dev/vda1 / ext4 defaults 0 1\n/dev/vdb /data xfs defaults 0 2\n"),
        _text("/etc/resolv.conf", "nameserver 192.0.2.53\nsearch example.net\n"),
        _text("/home/ops/.profile", "export PATH=$HOME/bin:$PATH\n"),
        _text("/home/ops/notes.txt", "remember: thaw before lunch\n", 0o600),
        GuestFile("/usr/bin/qgadash-sample", _SAMPLE_BINARY, 0o755, _EPOCH),
        _text("/data/README", "Writable scratch space for qgadash uploads.\n"),
        GuestFile("/data/blob.bin", _DATA_BLOB, 0o644, _EPOCH + 3600),
        _text("/data/backups/2024-11-18.tar.gz.sha256", "0" * 64 + "  2024-11-18.tar.gz\n"),
        _text("/var/log/dmesg", "[    0.000000] Linux version (simulated)\n"),
        _text("/var/log/.hidden", "dotfiles are listed too\n"),
    )


_TREE_DEBIAN = _linux_tree("Debian GNU/Linux 12 (simulated by qgadash)\n")
_TREE_UBUNTU = _linux_tree("Welcome to Ubuntu 24.04.1 LTS (simulated by qgadash)\n")
_TREE_ROCKY = _linux_tree("Rocky Linux 9.4 (simulated by qgadash)\n")
_TREE_ALPINE = _linux_tree("Welcome to Alpine! (simulated by qgadash)\n")
_TREE_FEDORA = _linux_tree("Fedora Linux 41 (simulated by qgadash)\n")

_TREE_WINDOWS: tuple[GuestFile, ...] = (
    _dir("C:\\"),
    _dir("C:\\Windows"),
    _dir("C:\\Windows\\System32"),
    _dir("C:\\Windows\\System32\\drivers"),
    _dir("C:\\Windows\\System32\\drivers\\etc"),
    _dir("C:\\Windows\\Logs"),
    _dir("C:\\ProgramData"),
    _dir("C:\\Users"),
    _dir("C:\\Users\\Administrator"),
    _dir("D:\\"),
    _text(
        "C:\\Windows\\System32\\drivers\\etc\\hosts",
        "# Copyright (c) 1993-2009 Microsoft Corp.\r\n127.0.0.1       localhost\r\n",
    ),
    _text("C:\\Windows\\win.ini", "; for 16-bit app support\r\n[fonts]\r\n[extensions]\r\n"),
    _text("C:\\Users\\Administrator\\notes.txt", "Patch Tuesday: second Tuesday\r\n"),
    GuestFile("C:\\ProgramData\\sample.bin", _SAMPLE_BINARY, 0o644, _EPOCH),
    _text("D:\\README.txt", "Data volume\r\n"),
)

_OS_DEBIAN = OsInfo(
    "debian",
    "Debian GNU/Linux",
    "Debian GNU/Linux 12 (bookworm)",
    "12 (bookworm)",
    "12",
    "6.1.0-27-amd64",
    "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)",
)
_OS_UBUNTU = OsInfo(
    "ubuntu",
    "Ubuntu",
    "Ubuntu 24.04.1 LTS",
    "24.04.1 LTS (Noble Numbat)",
    "24.04",
    "6.8.0-49-generic",
    "#49-Ubuntu SMP PREEMPT_DYNAMIC Mon Nov  4 02:06:24 UTC 2024",
)
_OS_ROCKY = OsInfo(
    "rocky",
    "Rocky Linux",
    "Rocky Linux 9.4 (Blue Onyx)",
    "9.4 (Blue Onyx)",
    "9.4",
    "5.14.0-427.42.1.el9_4.x86_64",
    "#1 SMP PREEMPT_DYNAMIC Fri Oct 18 14:35:40 UTC 2024",
)
_OS_ALPINE = OsInfo(
    "alpine",
    "Alpine Linux",
    "Alpine Linux v3.20",
    "3.20.3",
    "3.20.3",
    "6.6.58-0-virt",
    "#1-Alpine SMP PREEMPT_DYNAMIC 2024-10-24 08:54:40",
)
_OS_FEDORA = OsInfo(
    "fedora",
    "Fedora Linux",
    "Fedora Linux 41 (Server Edition)",
    "41 (Server Edition)",
    "41",
    "6.11.4-301.fc41.x86_64",
    "#1 SMP PREEMPT_DYNAMIC Sun Oct 20 15:02:33 UTC 2024",
    variant="Server Edition",
    variant_id="server",
)
_OS_WINDOWS = OsInfo(
    "mswindows",
    "Microsoft Windows",
    "Windows Server 2022 Datacenter",
    "Microsoft Windows Server 2022",
    "2022",
    "20348",
    "10.0",
    variant="server",
    variant_id="server",
)

# Commands a Windows agent does not implement: it lists them with enabled=false.
_WINDOWS_UNSUPPORTED = frozenset(
    {
        "guest-get-memory-blocks",
        "guest-set-memory-blocks",
        "guest-get-memory-block-info",
        "guest-get-cpustats",
        "guest-get-diskstats",
        "guest-set-vcpus",
        "guest-fstrim",
    }
)


@dataclass(frozen=True, slots=True)
class _Distro:
    key: str
    os: OsInfo
    agent_version: str
    fs_type: str
    tree: tuple[GuestFile, ...]
    roles: tuple[str, ...]
    nic: str


_DISTROS: tuple[_Distro, ...] = (
    _Distro("debian", _OS_DEBIAN, "7.2.22", "ext4", _TREE_DEBIAN, ("web", "db", "cache"), "ens3"),
    _Distro("ubuntu", _OS_UBUNTU, "8.2.2", "ext4", _TREE_UBUNTU, ("app", "ci", "web"), "enp1s0"),
    _Distro("rocky", _OS_ROCKY, "8.2.0", "xfs", _TREE_ROCKY, ("db", "mq", "ldap"), "eth0"),
    _Distro("alpine", _OS_ALPINE, "9.0.1", "ext4", _TREE_ALPINE, ("proxy", "dns"), "eth0"),
    _Distro("fedora", _OS_FEDORA, "10.0.3", "btrfs", _TREE_FEDORA, ("build", "dev"), "enp1s0"),
)
_WINDOWS_EVERY = 10  # one guest in ten runs Windows Server 2022
_DISTRO_CYCLE = (0, 1, 2, 0, 1, 3, 2, 4, 0)  # Debian and Ubuntu most common


def _mac(index: int, nic: int = 0) -> str:
    return f"52:54:{nic:02x}:{(index >> 16) & 255:02x}:{(index >> 8) & 255:02x}:{index & 255:02x}"


def _ipv4(index: int) -> str:
    host = index % 250 + 2
    subnet = index // 250
    return f"10.{(subnet // 250) % 250}.{subnet % 250}.{host}"


def _link_local(mac: str) -> str:
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    words = [
        (octets[0] << 8) | octets[1],
        (octets[2] << 8) | 0xFF,
        0xFE00 | octets[3],
        (octets[4] << 8) | octets[5],
    ]
    return "fe80::" + ":".join(f"{w:x}" for w in words)


def make_profile(index: int, seed: int = 0) -> GuestProfile:
    """A varied, deterministic guest: the same (index, seed) always gives the same guest."""
    rng = random.Random((seed << 40) ^ (index * 2654435761) ^ 0x51D)
    if index % _WINDOWS_EVERY == _WINDOWS_EVERY - 1:
        return _windows_profile(index, rng)
    distro = _DISTROS[_DISTRO_CYCLE[index % len(_DISTRO_CYCLE)]]
    role = distro.roles[rng.randrange(len(distro.roles))]
    hostname = f"{role}-{index:04d}"
    mac = _mac(index)
    rx_rate = rng.choice((2_000.0, 15_000.0, 250_000.0, 1_200_000.0, 12_000_000.0))
    interfaces = (
        NetInterface(
            "lo",
            "00:00:00:00:00:00",
            (IpAddress("127.0.0.1", 8), IpAddress("::1", 128, "ipv6")),
            rx_bytes=3193,
            tx_bytes=3193,
            rx_packets=29,
            tx_packets=29,
            rx_rate=120.0,
            tx_rate=120.0,
        ),
        NetInterface(
            distro.nic,
            mac,
            (
                IpAddress(_ipv4(index), 16),
                IpAddress(f"fd00::{index + 2:x}", 64, "ipv6"),
                IpAddress(_link_local(mac), 64, "ipv6"),
            ),
            rx_bytes=rng.randrange(10**6, 10**11),
            tx_bytes=rng.randrange(10**6, 10**10),
            rx_packets=rng.randrange(10**4, 10**8),
            tx_packets=rng.randrange(10**4, 10**7),
            rx_rate=rx_rate,
            tx_rate=rx_rate * rng.uniform(0.05, 0.6),
        ),
    )
    root_disk = Disk("/dev/vda", "virtio", 4, None, 40 << 30)
    data_disk = Disk("/dev/vdb", "virtio", 5, f"data-{index:04d}", 200 << 30)
    root_total = 39_600_000_000 + rng.randrange(0, 10**9)
    data_total = 214_000_000_000
    filesystems = (
        Filesystem(
            "vda1",
            "/",
            distro.fs_type,
            root_total,
            int(root_total * rng.uniform(0.2, 0.93)),
            root_disk,
        ),
        Filesystem(
            "vdb", "/data", "xfs", data_total, int(data_total * rng.uniform(0.05, 0.97)), data_disk
        ),
    )
    users: tuple[GuestUser, ...] = ()
    if rng.random() < 0.5:
        users = (GuestUser("ops", float(_EPOCH + rng.randrange(86400)) + 0.25),)
    zone, offset = rng.choice((("UTC", 0), ("CET", 3600), ("EST", -18000), ("JST", 32400)))
    return GuestProfile(
        hostname=hostname,
        os=distro.os,
        interfaces=interfaces,
        filesystems=filesystems,
        users=users,
        timezone=zone,
        tz_offset=offset,
        agent_version=distro.agent_version,
        files=distro.tree,
        vcpus=rng.choice((1, 2, 2, 4, 8)),
        memory_bytes=rng.choice((1, 2, 4, 8, 16)) << 30,
        load=rng.choice((0.05, 0.3, 0.8, 1.7, 3.5)),
    )


def _windows_profile(index: int, rng: random.Random) -> GuestProfile:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    hostname = "WIN-" + "".join(rng.choice(letters) for _ in range(11))
    mac = _mac(index)
    volume = "\\\\?\\Volume{" + f"{index:08x}-0000-0000-0000-{rng.getrandbits(48):012x}" + "}\\"
    disk = Disk("\\\\.\\PhysicalDrive0", "sata", 4, None, 80 << 30)
    data_disk = Disk("\\\\.\\PhysicalDrive1", "scsi", 6, f"DATA{index:04d}", 500 << 30)
    total = 85_253_680_128
    return GuestProfile(
        hostname=hostname,
        os=_OS_WINDOWS,
        interfaces=(
            NetInterface(
                "Ethernet Instance 0",
                mac,
                (IpAddress(_ipv4(index), 16), IpAddress(_link_local(mac), 64, "ipv6")),
                rx_bytes=rng.randrange(10**8, 10**10),
                tx_bytes=rng.randrange(10**7, 10**9),
                rx_packets=rng.randrange(10**5, 10**7),
                tx_packets=rng.randrange(10**5, 10**7),
                rx_rate=180_000.0,
                tx_rate=40_000.0,
            ),
            NetInterface(
                "Loopback Pseudo-Interface 1", "", (IpAddress("127.0.0.1", 8),), statistics=False
            ),
        ),
        filesystems=(
            Filesystem(volume, "C:\\", "NTFS", total, int(total * 0.61), disk),
            Filesystem(
                volume.replace("-0000-0000-", "-0001-0000-"),
                "D:\\",
                "NTFS",
                536_870_907_904,
                301_989_888_000,
                data_disk,
            ),
        ),
        users=(GuestUser("Administrator", float(_EPOCH + 7200) + 0.5, hostname),),
        timezone="Pacific Standard Time",
        tz_offset=-28800,
        agent_version="9.2.0",
        disabled_commands=frozenset({"guest-exec", "guest-exec-status"}),
        windows=True,
        files=_TREE_WINDOWS,
        vcpus=4,
        memory_bytes=8 << 30,
        load=0.6,
        log_path="C:\\Windows\\Logs\\qgadash-demo.log",
        log_interval=3.0,
    )


class Era(enum.Enum):
    """Generations of qemu-ga a simulated guest can run; the value names it on the command
    line. Each is a real release of its time, and answers as that release did."""

    QGA_1_0 = "1.0"  # Ubuntu 12.04: guest-sync only, guest-info lists no commands
    QGA_1_2 = "1.2"  # Ubuntu 12.10: the seed's schema; refuses request ids
    QGA_2_5 = "2.5"  # Ubuntu 16.04: guest-exec, fsinfo; still refuses ids, no NIC stats
    QGA_7_2 = "7.2"  # Debian 12: today's, echoes ids
    QGA_10 = "10"  # Fedora: guest-get-load, guest-network-get-route
    WINDOWS = "windows"  # virtio-win on Server 2022: VSS's 10 s freeze, exec disabled

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Era:
        wanted = text.strip().lower()
        for era in cls:
            if era.value == wanted:
                return era
        names = ", ".join(e.value for e in cls)
        raise ValueError(f"unknown era {text!r}; expected one of: {names}")


_OS_UBUNTU_1204 = OsInfo(
    "ubuntu",
    "Ubuntu",
    "Ubuntu 12.04.5 LTS",
    "12.04.5 LTS, Precise Pangolin",
    "12.04",
    "3.2.0-126-generic",
    "#169-Ubuntu SMP Fri Mar 31 14:15:21 UTC 2017",
)
_OS_UBUNTU_1210 = OsInfo(
    "ubuntu",
    "Ubuntu",
    "Ubuntu 12.10",
    "12.10, Quantal Quetzal",
    "12.10",
    "3.5.0-54-generic",
    "#81-Ubuntu SMP Tue Jul 15 04:02:22 UTC 2014",
)
_OS_UBUNTU_1604 = OsInfo(
    "ubuntu",
    "Ubuntu",
    "Ubuntu 16.04.7 LTS",
    "16.04.7 LTS (Xenial Xerus)",
    "16.04",
    "4.4.0-210-generic",
    "#242-Ubuntu SMP Fri Apr 16 09:57:56 UTC 2021",
)
_TREE_PRECISE = _linux_tree("Ubuntu 12.04.5 LTS (simulated by qgadash)\n")
_TREE_QUANTAL = _linux_tree("Ubuntu 12.10 (simulated by qgadash)\n")
_TREE_XENIAL = _linux_tree("Ubuntu 16.04.7 LTS (simulated by qgadash)\n")
# era: (OS, agent version as its guest-info reports it, file tree, host name prefix)
_ERA_GUESTS: dict[Era, tuple[OsInfo, str, tuple[GuestFile, ...], str]] = {
    Era.QGA_1_0: (_OS_UBUNTU_1204, "1.0", _TREE_PRECISE, "precise"),
    Era.QGA_1_2: (_OS_UBUNTU_1210, "1.2.0", _TREE_QUANTAL, "quantal"),
    Era.QGA_2_5: (_OS_UBUNTU_1604, "2.5.0", _TREE_XENIAL, "xenial"),
    Era.QGA_7_2: (_OS_DEBIAN, "7.2.22", _TREE_DEBIAN, "bookworm"),
    Era.QGA_10: (_OS_FEDORA, "10.0.3", _TREE_FEDORA, "fedora"),
}


def era_profile(era: Era, index: int = 0, seed: int = 0) -> GuestProfile:
    """A guest of `index` (as `make_profile` varies them) running an agent of `era`."""
    if era is Era.WINDOWS:
        return _windows_profile(index, random.Random(f"qgadash-era:{seed}:{index}"))
    base = make_profile(index if index % _WINDOWS_EVERY != _WINDOWS_EVERY - 1 else index + 1, seed)
    os_info, version, tree, prefix = _ERA_GUESTS[era]
    return dataclasses.replace(
        base,
        hostname=f"{prefix}-{index:04d}",
        os=os_info,
        agent_version=version,
        files=tree,
    )


def windows_unsupported_commands() -> frozenset[str]:
    """Commands the Windows agent lists as disabled because Windows lacks them."""
    return _WINDOWS_UNSUPPORTED


def demo_fleet(n: int = 24, seed: int = 0) -> list[tuple[str, GuestProfile, Fault]]:
    """The fleet behind `qgadash --demo`: mostly healthy Linux guests, one Windows guest,
    one old guest (Ubuntu 16.04, qemu-ga 2.5: no request ids, fewer facts), one whose
    agent is down, one frozen, one slow. Deterministic.
    """
    if n <= 0:
        return []
    fleet: list[tuple[str, GuestProfile, Fault]] = []
    specials = {
        3: Fault.SILENT,
        5: Fault.FROZEN,
        7: Fault.SLOW,
    }
    windows_slot = min(9, n - 1) if n > 1 else -1
    old_slot = 11 if n > 11 else -1
    for i in range(n):
        if i == windows_slot:
            profile = _windows_profile(i, random.Random(f"qgadash-demo:{seed}:{i}"))
            name = f"win-{i + 1:02d}"
            fault = Fault.NONE
        elif i == old_slot:
            name = f"legacy-{i + 1:02d}"
            profile = dataclasses.replace(era_profile(Era.QGA_2_5, i + 1000, seed), hostname=name)
            fault = Fault.NONE
        else:
            index = i if i % _WINDOWS_EVERY != _WINDOWS_EVERY - 1 else i + 1000
            profile = make_profile(index, seed)
            if profile.windows:  # keep exactly one Windows guest in the demo
                profile = make_profile(index + 1, seed)
            role = profile.hostname.split("-")[0]
            name = f"{role}-{i + 1:02d}"
            profile = dataclasses.replace(profile, hostname=name)
            fault = specials.get(i, Fault.NONE) if n > 4 else Fault.NONE
        fleet.append((name, profile, fault))
    return fleet


# --- hostile strings -------------------------------------------------------------------

_HOSTILE_SUFFIX = (
    "[bold red]x[/]"
    "[link=https://evil.example/]click[/link]"
    "\x1b[31m"
    "\x1b]0;pwned\x07"
    "\x1b[2J"
    "\rOVERWRITE"
    "\x00"
    "[/]"
)


def hostile_text(text: str) -> str:
    """`text` with Rich markup, terminal escapes, a carriage return and a NUL appended."""
    return f"[bold red]{text}[/]{_HOSTILE_SUFFIX}"


def hostile_name(text: str) -> str:
    """A file name with markup and escapes; no "/" (or "\\"), which no file name can hold."""
    return f"[bold red]{text}[reverse][link=evil:x]\x1b[31m\x1b]0;pwned\x07\rOVERWRITE\x00"


def _hostile_content(entry: GuestFile) -> GuestFile:
    content = entry.content
    if content is None or b"\x00" in content or entry.path.endswith(".bin"):
        return entry
    return dataclasses.replace(
        entry, content=hostile_text(content.decode("utf-8", "replace")).encode()
    )


def _hostile_sibling(entry: GuestFile, windows: bool) -> GuestFile:
    sep = "\\" if windows else "/"
    head, _, base = entry.path.rpartition(sep)
    return dataclasses.replace(entry, path=f"{head}{sep}{hostile_name(base)}")


def markup_profile(profile: GuestProfile) -> GuestProfile:
    """The same guest with markup and escapes in every free-text string it reports.

    Enumerated fields (ip-address-type, bus types), the agent version and command names
    stay intact, so the guest remains usable. Files keep their real paths (so they can be
    opened) and gain siblings with hostile names; text contents carry markup.
    """
    os_info = profile.os
    hostile_os = dataclasses.replace(
        os_info,
        **{
            f.name: hostile_text(value)
            for f in dataclasses.fields(OsInfo)
            if isinstance(value := getattr(os_info, f.name), str)
        },
    )
    interfaces = tuple(
        dataclasses.replace(
            nic,
            name=hostile_text(nic.name),
            mac=hostile_text(nic.mac),
            addresses=tuple(
                dataclasses.replace(a, address=hostile_text(a.address)) for a in nic.addresses
            ),
        )
        for nic in profile.interfaces
    )
    filesystems = tuple(
        dataclasses.replace(
            fs,
            name=hostile_text(fs.name),
            mountpoint=hostile_text(fs.mountpoint),
            type=hostile_text(fs.type),
            disk=(
                dataclasses.replace(
                    fs.disk,
                    dev=hostile_text(fs.disk.dev),
                    serial=hostile_text(fs.disk.serial or "serial"),
                )
                if fs.disk is not None
                else None
            ),
        )
        for fs in profile.filesystems
    )
    users = tuple(
        dataclasses.replace(
            u, name=hostile_text(u.name), domain=hostile_text(u.domain) if u.domain else None
        )
        for u in profile.users
    ) or (GuestUser(hostile_text("mallory"), float(_EPOCH)),)
    files = tuple(_hostile_content(entry) for entry in profile.files)
    files += tuple(_hostile_sibling(entry, profile.windows) for entry in files if not entry.is_dir)
    return dataclasses.replace(
        profile,
        hostname=hostile_text(profile.hostname),
        os=hostile_os,
        interfaces=interfaces,
        filesystems=filesystems,
        users=users,
        timezone=hostile_text(profile.timezone or "UTC"),
        agent_version=profile.agent_version,
        files=files,
    )
