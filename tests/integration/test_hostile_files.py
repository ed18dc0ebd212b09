"""Guest files against a hostile agent: what lands on the operator's disk is bounded,
never replaces a file without consent, never follows a planted link, and is audited.

The hostile behaviours (a read that never ends, a seek that lies) come from a small
scriptable agent (tests/integration/fakeagent.py); the real agent's side is in
test_real_agent.py and tests/guests/test_product_files.py.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.files import DownloadTooLarge
from tests.integration.fakeagent import FakeAgent, FakeError, fake_agent, supported

REPO = Path(__file__).resolve().parents[2]
VM = "local/fake"


OPEN_MODES = {"r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b", "w+", "wb+", "w+b", "a+"}
OPEN_MODES |= {"ab+", "a+b"}


class GuestFile:
    """guest-file-* handlers over one in-memory file; `endless` never reports eof,
    `seekable` False makes seek fail (a pipe), `claimed_size` lies about the size.
    Like qemu-ga, every call on the file must name the handle `guest-file-open` gave;
    `closed` lists the handles closed."""

    HANDLE = 1000

    def __init__(
        self,
        data: bytes = b"",
        *,
        endless: bool = False,
        seekable: bool = True,
        claimed_size: int | None = None,
    ) -> None:
        self.data = data
        self.endless = endless
        self.seekable = seekable
        self.claimed_size = claimed_size
        self.position = 0
        self.written = bytearray()
        self.closed: list[int] = []
        self.opened: list[tuple[str, str]] = []

    def _check(self, args: dict[str, Any]) -> None:
        if args.get("handle") != self.HANDLE:
            raise FakeError(f"handle '{args.get('handle')}' has not been found")

    def handlers(self) -> dict[str, Any]:
        return {
            "guest-info": lambda a: supported(
                [
                    "guest-file-open",
                    "guest-file-read",
                    "guest-file-write",
                    "guest-file-seek",
                    "guest-file-close",
                    "guest-ping",
                ]
            ),
            "guest-ping": lambda a: {},
            "guest-file-open": self.open,
            "guest-file-seek": self.seek,
            "guest-file-read": self.read,
            "guest-file-write": self.write,
            "guest-file-close": self.close,
        }

    def open(self, args: dict[str, Any]) -> int:
        # qemu-ga takes fopen()'s modes only, and a path that is a string.
        if not isinstance(args.get("path"), str):
            raise FakeError("Invalid parameter type for 'path', expected: string")
        if args.get("mode", "r") not in OPEN_MODES:
            raise FakeError(f"invalid file open mode '{args.get('mode')}'")
        self.opened.append((args["path"], args.get("mode", "r")))
        self.position = 0
        return self.HANDLE

    def close(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check(args)
        self.closed.append(args["handle"])
        return {}

    def seek(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check(args)
        if not self.seekable:
            raise FakeError("failed to seek file: Illegal seek")
        if args["whence"] in (2, "end"):  # an int: what every agent era takes
            size = self.claimed_size if self.claimed_size is not None else len(self.data)
            self.position = size + int(args["offset"])
        else:
            self.position = int(args["offset"])
        return {"position": self.position, "eof": False}

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check(args)
        count = int(args.get("count", 4096))
        chunk = (
            b"\x00" * count if self.endless else self.data[self.position : self.position + count]
        )
        self.position += len(chunk)
        eof = not self.endless and self.position >= len(self.data)
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": eof}

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check(args)
        data = base64.b64decode(args["buf-b64"])
        self.written += data
        return {"count": len(data), "eof": False}


def write_hosts(tmp_path: Path, socket: Path, **settings: int) -> Path:
    lines = ["[settings]", "timeout = 2.0", "action_timeout = 5.0"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    lines += ["", "[[vm]]", 'name = "fake"', f"agent = {json.dumps(str(socket))}"]
    hosts = tmp_path / "hosts.toml"
    hosts.write_text("\n".join(lines) + "\n")
    return hosts


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "qgadash" / "audit.jsonl"


async def engine_over(
    tmp_path: Path, socket: Path, audit_path: Path, **settings: int
) -> FleetEngine:
    engine = FleetEngine(
        load_config(write_hosts(tmp_path, socket, **settings)), audit=AuditLog(audit_path)
    )
    await engine.discover()
    return engine


@pytest.fixture
async def served(socket_path: Path) -> AsyncIterator[tuple[GuestFile, FakeAgent]]:
    guest = GuestFile(b"hello from the guest\n")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        yield guest, agent


def audit(audit_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit_path.read_text().splitlines()]


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


async def test_a_read_that_never_ends_stops_at_the_size_the_guest_reported(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = GuestFile(b"x" * 1000, endless=True)  # eof never comes
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        out = tmp_path / "out"
        out.mkdir()
        size = await engine.files.download(VM, "/dev/zero-ish", out / "copy")
        await engine.stop()
    assert size == 1000 and (out / "copy").stat().st_size == 1000
    assert leftovers(out, {"copy"}) == []


async def test_a_stream_with_no_size_is_cut_at_max_download_bytes_and_nothing_is_kept(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = GuestFile(endless=True, seekable=False)  # a pipe that never ends
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(
            tmp_path, socket_path, audit_path, max_download_bytes=3 * 1024 * 1024
        )
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(DownloadTooLarge):
            await engine.files.download(VM, "/dev/zero", out / "zero")
        await engine.stop()
    assert leftovers(out, set()) == []  # neither the file nor a partial
    (record,) = [r for r in audit(audit_path) if r["action"] == "download"]
    assert record["ok"] is False and "max_download_bytes" in record["error"]


async def test_a_file_larger_than_max_download_bytes_is_refused_before_reading(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = GuestFile(b"", claimed_size=10**12)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path, max_download_bytes=4096)
        with pytest.raises(DownloadTooLarge, match="1000000000000 bytes"):
            await engine.files.download(VM, "/big", tmp_path / "big")
        await engine.stop()
    assert not any(r.get("execute") == "guest-file-read" for r in agent.requests)
    assert not (tmp_path / "big").exists()


async def test_a_download_never_replaces_an_existing_file_without_consent(
    tmp_path: Path, socket_path: Path, audit_path: Path, served: tuple[GuestFile, FakeAgent]
) -> None:
    engine = await engine_over(tmp_path, socket_path, audit_path)
    mine = tmp_path / "authorized_keys"
    mine.write_bytes(b"my key\n")
    with pytest.raises(FileExistsError) as caught:
        await engine.files.download(VM, "/root/.ssh/authorized_keys", mine)
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.EEXIST,
        "exists (not replaced)",
        str(mine),
    )
    assert mine.read_bytes() == b"my key\n"
    assert await engine.files.download(VM, "/x", mine, overwrite=True) == 21
    assert mine.read_bytes() == b"hello from the guest\n"
    await engine.stop()
    assert leftovers(tmp_path, {"authorized_keys", "fake.sock", "hosts.toml", "state"}) == []


async def test_a_planted_symlink_is_never_written_through(
    tmp_path: Path, socket_path: Path, audit_path: Path, served: tuple[GuestFile, FakeAgent]
) -> None:
    engine = await engine_over(tmp_path, socket_path, audit_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    planted = tmp_path / "download"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        await engine.files.download(VM, "/x", planted)
    await engine.files.download(VM, "/x", planted, overwrite=True)  # replaces the link itself
    await engine.stop()
    assert victim.read_bytes() == b"precious\n"
    assert not planted.is_symlink() and planted.read_bytes() == b"hello from the guest\n"


async def test_every_transfer_is_audited_with_paths_sizes_and_outcome(
    tmp_path: Path, socket_path: Path, audit_path: Path, served: tuple[GuestFile, FakeAgent]
) -> None:
    guest, _ = served
    engine = await engine_over(tmp_path, socket_path, audit_path)
    local = tmp_path / "up.txt"
    local.write_bytes(b"operator data")
    await engine.files.upload(VM, local, "/tmp/up.txt")
    await engine.files.download(VM, "/etc/motd", tmp_path / "motd")
    with pytest.raises(FileExistsError):
        await engine.files.download(VM, "/etc/motd", tmp_path / "motd")
    await engine.stop()
    assert bytes(guest.written) == b"operator data"
    records = [(r["action"], r["ok"], r["arguments"]) for r in audit(audit_path)]
    assert records[0] == ("upload", True, {"path": "/tmp/up.txt", "local": str(local), "bytes": 13})
    assert records[1] == (
        "download",
        True,
        {"path": "/etc/motd", "local": str(tmp_path / "motd"), "bytes": 21},
    )
    assert records[2][:2] == ("download", False)


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, bytes, str]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qgadash",
        "--hosts",
        str(tmp_path / "hosts.toml"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace")


async def test_cp_refuses_to_replace_a_file_without_force_and_writes_stdout_on_dash(
    tmp_path: Path, socket_path: Path, served: tuple[GuestFile, FakeAgent]
) -> None:
    write_hosts(tmp_path, socket_path)
    mine = tmp_path / "bashrc"
    mine.write_bytes(b"mine\n")
    code, _, err = await run_cli(tmp_path, "cp", f"{VM}:/root/.bashrc", str(mine))
    assert code == 1 and "not replaced (add --force)" in err
    assert mine.read_bytes() == b"mine\n"
    code, _, err = await run_cli(tmp_path, "cp", "--force", f"{VM}:/root/.bashrc", str(mine))
    assert code == 0, err
    assert mine.read_bytes() == b"hello from the guest\n"
    code, out, err = await run_cli(tmp_path, "cp", f"{VM}:/etc/motd", "-")
    assert code == 0, err
    assert out == b"hello from the guest\n"
    target = tmp_path / "into"
    target.mkdir()
    code, _, err = await run_cli(tmp_path, "cp", f"{VM}:/etc/motd", str(target))
    assert code == 0, err
    assert (target / "motd").read_bytes() == b"hello from the guest\n"
    assert leftovers(target, {"motd"}) == []


@pytest.mark.parametrize(
    ("reply", "known"),
    [
        ("frozen!", False),  # nonsense where a count belongs: it may have frozen
        (FakeError("guest-fsfreeze-freeze has been disabled"), True),  # refused: did not
    ],
    ids=["nonsense-reply", "error-reply"],
)
async def test_a_freeze_whose_reply_is_nonsense_is_unknown_and_stays_held(
    tmp_path: Path, socket_path: Path, audit_path: Path, reply: object, known: bool
) -> None:
    """Only an error reply proves a freeze did not happen; garbage after the request
    went out is "outcome unknown", and the guard keeps the hold (it thaws later)."""

    def freeze(args: dict[str, Any]) -> Any:
        if isinstance(reply, FakeError):
            raise reply
        return reply

    handlers = {
        "guest-info": lambda a: supported(["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]),
        "guest-fsfreeze-status": lambda a: "thawed",
        "guest-fsfreeze-freeze": freeze,
        "guest-fsfreeze-thaw": lambda a: 1,
    }
    async with fake_agent(socket_path, handlers):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        await engine.poll_once()
        (result,) = await engine.freeze([VM], thaw_after=600)
        held = engine.frozen_by_us()
        thawed = await engine.stop()
    if known:
        assert result.ok is False and held == [] and thawed == []
    else:
        assert result.ok is None and "outcome unknown" in (result.error or "")
        assert held == [VM]
        assert [(r.vm_id, r.ok) for r in thawed] == [(VM, True)]  # thawed on stop


async def test_seeks_send_whence_as_the_integer_every_agent_era_takes(
    tmp_path: Path, socket_path: Path, audit_path: Path, served: tuple[GuestFile, FakeAgent]
) -> None:
    """Names ("set", "end") came in qemu-ga 2.6; older agents refuse them."""
    _, agent = served
    engine = await engine_over(tmp_path, socket_path, audit_path)
    await engine.files.download(VM, "/etc/motd", tmp_path / "motd")
    await engine.stop()
    seeks = [r["arguments"]["whence"] for r in agent.requests if r["execute"] == "guest-file-seek"]
    assert seeks == [2, 0]


async def test_a_huge_listing_never_stops_the_other_vms_polls(tmp_path: Path) -> None:
    """650,000 entries stalled the loop for 45 s (every other VM's polls, every thaw
    timer). Now: capped, and parsed off the loop: the other VMs keep being polled."""
    from qgadash.sim import SimFleet

    names = b"".join(f"81a4 1 1700000000 file-{i:07d}\0".encode() for i in range(300_000))
    exec_polls = 0

    def exec_status(args: dict[str, Any]) -> dict[str, Any]:
        nonlocal exec_polls
        exec_polls += 1
        if exec_polls < 4:
            return {"exited": False}
        return {"exited": True, "exitcode": 0, "out-data": base64.b64encode(names).decode()}

    handlers = {
        "guest-info": lambda a: supported(["guest-exec", "guest-exec-status", "guest-ping"]),
        "guest-ping": lambda a: {},
        "guest-exec": lambda a: {"pid": 42},
        "guest-exec-status": exec_status,
    }
    socket = tmp_path / "big.sock"
    async with fake_agent(socket, handlers), SimFleet.healthy(tmp_path / "sim", 1) as sim:
        hosts = tmp_path / "hosts.toml"
        hosts.write_text(
            "[settings]\npoll_interval = 0.2\ntimeout = 2.0\naction_timeout = 20.0\n"
            "max_reply_bytes = 33554432\n"
            f'[[vm]]\nname = "big"\nagent = {json.dumps(str(socket))}\n'
            f'[[hypervisor]]\nname = "sim"\nagents = ["{sim.directory}/*.sock"]\n'
        )
        engine = FleetEngine(load_config(hosts))
        other = f"sim/{sim.vms[0].name}"
        seen: set[float] = set()
        listing_done = asyncio.Event()

        async def watch_other() -> None:
            while not listing_done.is_set():
                snap = engine.store.get(other)
                if snap is not None and snap.last_poll is not None:
                    seen.add(snap.last_poll)
                await asyncio.sleep(0.02)

        try:
            await engine.start()
            await engine.poll_vm("local/big")
            watcher = asyncio.create_task(watch_other())
            await asyncio.sleep(0.05)
            before = len(seen)
            listing = await engine.files.list_dir("local/big", "/huge")
            during = len(seen) - before
            listing_done.set()
            await watcher
        finally:
            await engine.stop()
    assert len(listing.entries) == 5000 and listing.more == 300_000 - 5000
    assert during >= 2, f"the other VM was polled {during} times while the listing ran"
