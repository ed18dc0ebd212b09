"""The hold journal: a durable record of every thaw this machine's qgadash owes.

A freeze is only as safe as the promise to thaw it, and a promise kept in one process's
memory dies with that process (SIGKILL, a crashed laptop). So before a freeze request goes
out, its hold is written here and fsynced: which VM, how to reach it (enough to rebuild
the transport in another process), the deadline, the keeper armed next to the guest and
the process that owns it. A thaw that succeeds removes the record. The local keeper
(`qgadash.fleet.keeper`) and any later start of qgadash read the directory and settle
what is still owed; holds of a live owner are left to it.

One file per hold (`<token>.json`) so that writers never rewrite each other's records
and a torn write can only lose the record being written (written to a temporary name,
fsynced, renamed, directory fsynced).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qgadash.fleet.config import HypervisorConfig

JOURNAL_VERSION = 1
LOCAL_KEEPER = "local"  # the detached keeper process on this machine
NO_KEEPER = "none"


def state_directory() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qgadash"


def default_journal_path() -> Path:
    return state_directory() / "holds"


def new_token() -> str:
    """A hold's name here and on the hypervisor: 16 hex digits, safe in paths and units."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Reach:
    """How to reach one VM's agent: the hypervisor's transport settings and the address.

    Enough for another process (the keeper, a later qgadash) to rebuild the link without
    the hosts.toml that was used.
    """

    hypervisor: str
    address: str
    via: str = "socket"
    ssh: str | None = None
    identity: str | None = None
    known_hosts: str | None = None
    jump: str | None = None
    uri: str | None = None  # libvirt's URI (a session domain is thawed through its own)

    @classmethod
    def of(cls, hv: HypervisorConfig | None, hypervisor: str, address: str) -> Reach:
        if hv is None:
            return cls(hypervisor, address)
        return cls(
            hv.name, address, hv.via, hv.ssh, hv.identity, hv.known_hosts, hv.jump, hv.uri
        )

    @property
    def local(self) -> bool:
        return self.ssh is None

    def hypervisor_config(self) -> HypervisorConfig:
        return HypervisorConfig(
            self.hypervisor,
            ssh=self.ssh,
            via=self.via,
            identity=self.identity,
            known_hosts=self.known_hosts,
            jump=self.jump,
            uri=self.uri,
        )


@dataclass(frozen=True, slots=True)
class Owner:
    """The qgadash process that holds a freeze: pid plus start time (pids are reused)."""

    pid: int
    start: str | None
    host: str

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, process_start(pid), socket.gethostname())

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # another machine's process: not ours to judge (shared home)
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)  # pragma: no mutate (another signal would hit a real process)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        return self.start is None or process_start(self.pid) == self.start


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


@dataclass(frozen=True, slots=True)
class HoldRecord:
    token: str
    vm_id: str
    reach: Reach
    deadline: float  # wall clock (time.time())
    keeper: str  # LOCAL_KEEPER, "systemd", "nohup" (on the hypervisor) or NO_KEEPER
    owner: Owner
    created: float

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["version"] = JOURNAL_VERSION
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> HoldRecord:
        """Parse one record; ValueError for anything that is not a version-1 record."""
        if not isinstance(doc, dict) or doc.get("version") != JOURNAL_VERSION:
            raise ValueError("not a version-1 hold record")
        try:
            reach = doc["reach"]
            owner = doc["owner"]
            record = cls(
                str(doc["token"]),
                str(doc["vm_id"]),
                Reach(**{k: reach.get(k) for k in Reach.__dataclass_fields__}),
                float(doc["deadline"]),
                str(doc["keeper"]),
                Owner(int(owner["pid"]), owner.get("start"), str(owner["host"])),
                float(doc["created"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"incomplete hold record: {exc}") from None
        if not record.token.isalnum() or not isinstance(record.reach.address, str):
            raise ValueError("bad token or address")
        return record


class HoldJournal:
    """The directory of hold records; safe to share between processes."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_journal_path()

    def _path(self, token: str) -> Path:
        if not token.isalnum():
            raise ValueError(f"bad hold token {token!r}")
        return self.directory / f"{token}.json"

    def write(self, record: HoldRecord) -> None:
        """Durably: the record is on disk when this returns (raises OSError otherwise)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self._path(record.token)
        temporary = final.with_suffix(".tmp")
        data = (json.dumps(record.to_json(), sort_keys=True) + "\n").encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
        self._sync_directory()

    def remove(self, token: str) -> bool:
        """Forget a hold (its thaw succeeded); False if it was already gone."""
        try:
            self._path(token).unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            self._sync_directory()
        return True

    def load(self) -> tuple[list[HoldRecord], list[str]]:
        """Every readable record, and a line for each file that could not be read."""
        records: list[HoldRecord] = []
        problems: list[str] = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [f"cannot read the hold journal {self.directory}: {exc.strerror or exc}"]
        for name in names:
            if not name.endswith(".json"):
                continue
            path = self.directory / name
            try:
                records.append(HoldRecord.from_json(json.loads(path.read_bytes())))
            except FileNotFoundError:
                continue  # removed meanwhile: thawed
            except (OSError, ValueError) as exc:
                problems.append(f"unreadable hold record {path}: {exc}")
        return records, problems

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
