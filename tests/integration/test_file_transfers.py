"""Downloads and uploads that go wrong midway: a guest that sends more than was asked,
a link that dies, a local disk that refuses. Nothing is left behind, nothing grows past
what was asked, and each is audited as failed. (The agent side is a scriptable fake:
tests/integration/fakeagent.py; the well-behaved cases are in test_hostile_files.py.)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent import replies
from qgadash.agent.errors import AgentError
from qgadash.agent.replies import ReplyShapeError
from qgadash.fleet import files as files_module
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.files import ListingUnavailable
from qgadash.fleet.listing import TRUNCATED_EXIT, linux_list_command
from qgadash.sim import Fault, GuestProfile, SimFleet, SimVm, make_profile
from tests.integration.fakeagent import FakeError, fake_agent, supported
from tests.integration.test_hostile_files import VM, GuestFile, audit, engine_over, leftovers


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "fake.sock"


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "qgadash" / "audit.jsonl"


class GreedyFile(GuestFile):
    """Answers every guest-file-read with one byte more than was asked for."""

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        chunk = b"y" * (int(args["count"]) + 1)
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": False}


class DyingFile(GuestFile):
    """Sends `good` reads, then fails every read (the guest's disk, or its agent, died)."""

    def __init__(self, data: bytes, good: int) -> None:
        super().__init__(data)
        self.good = good
        self.reads = 0

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        self.reads += 1
        if self.reads > self.good:
            raise FakeError("read failed: Input/output error")
        return super().read(args)


class ShortWriteFile(GuestFile):
    """Writes one byte less than it was sent."""

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(args["buf-b64"])[:-1]
        self.written += data
        return {"count": len(data), "eof": False}


def test_a_read_reply_larger_than_the_count_asked_for_is_refused() -> None:
    four = {"count": 4, "buf-b64": base64.b64encode(b"abcd").decode(), "eof": False}
    assert replies.parse_file_read(four, 4).data == b"abcd"
    with pytest.raises(ReplyShapeError):
        replies.parse_file_read(four, 3)
    lying = {"count": 3, "buf-b64": base64.b64encode(b"abcd").decode()}
    with pytest.raises(ReplyShapeError):
        replies.parse_file_read(lying, 10)


async def test_a_guest_sending_more_than_asked_fails_the_download_and_leaves_nothing(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = GreedyFile(b"x" * 100)
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(ReplyShapeError):
            await engine.files.download(VM, "/etc/greedy", out / "copy")
        await engine.stop()
    assert leftovers(out, set()) == []
    (record,) = [r for r in audit(audit_path) if r["action"] == "download"]
    assert record["ok"] is False and record["arguments"] == {
        "path": "/etc/greedy",
        "local": str(out / "copy"),
    }


async def test_a_download_whose_reads_fail_midway_leaves_no_partial_file(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 10)
    guest = DyingFile(b"z" * 100, good=3)
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        out = tmp_path / "out"
        out.mkdir()
        seen: list[tuple[int, int | None]] = []
        with pytest.raises(AgentError, match="Input/output error"):
            await engine.files.download(
                VM, "/var/log/big", out / "big", progress=lambda d, t: seen.append((d, t))
            )
        await engine.stop()
    assert seen == [(10, 100), (20, 100), (30, 100)]
    assert leftovers(out, set()) == []  # neither the target nor a .partial
    (record,) = [r for r in audit(audit_path) if r["action"] == "download"]
    assert record["ok"] is False and "Input/output error" in record["error"]
    assert record["vm"] == VM
    assert guest.opened == [("/var/log/big", "r")] and guest.closed == [GuestFile.HANDLE]


async def test_a_failed_download_whose_partial_was_removed_meanwhile_reports_its_own_error(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleaner (tmpreaper, the operator) removed the .partial while the copy ran: the
    error the operator sees is still the guest's, not the missing file's."""
    monkeypatch.setattr(files_module, "READ_CHUNK", 10)
    guest = DyingFile(b"z" * 100, good=1)
    out = tmp_path / "out"
    out.mkdir()

    def remove_partials(done: int, total: int | None) -> None:
        for partial in out.glob("*.partial"):
            partial.unlink()

    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        with pytest.raises(AgentError, match="Input/output error"):
            await engine.files.download(VM, "/var/log/big", out / "big", progress=remove_partials)
        await engine.stop()
    assert leftovers(out, set()) == []


async def test_a_download_the_local_disk_refuses_leaves_no_partial_file(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest = GuestFile(b"data" * 10)
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        out = tmp_path / "out"
        out.mkdir()

        def no_space(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(OSError, match="No space left"):
            await engine.files.download(VM, "/etc/motd", out / "motd")
        monkeypatch.undo()
        await engine.stop()
    assert leftovers(out, set()) == []
    (record,) = [r for r in audit(audit_path) if r["action"] == "download"]
    assert record["ok"] is False and "No space left" in record["error"]


async def test_a_download_of_an_exact_size_stops_there_and_reports_progress(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 8)
    guest = GuestFile(b"0123456789" * 2)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        seen: list[tuple[int, int | None]] = []
        began = time.perf_counter()
        size = await engine.files.download(
            VM, "/f", tmp_path / "f", progress=lambda d, t: seen.append((d, t))
        )
        elapsed = time.perf_counter() - began
        await engine.stop()
    assert size == 20 and (tmp_path / "f").read_bytes() == b"0123456789" * 2
    assert guest.opened == [("/f", "r")]
    (record,) = [r for r in audit(audit_path) if r["action"] == "download"]
    assert (record["vm"], record["ok"], record["arguments"]["bytes"]) == (VM, True, 20)
    assert 0 < record["elapsed_ms"] <= elapsed * 1000 + 1  # the copy's own time, in ms
    assert seen == [(8, 20), (16, 20), (20, 20)]
    counts = [
        r["arguments"]["count"] for r in agent.requests if r.get("execute") == "guest-file-read"
    ]
    assert counts == [8, 8, 4]  # never more than is left of the reported size
    assert [r["execute"] for r in agent.requests if "file" in r.get("execute", "")][-1] == (
        "guest-file-close"
    )


async def test_an_upload_the_guest_writes_short_fails_and_is_audited(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = ShortWriteFile()
    local = tmp_path / "up.bin"
    local.write_bytes(b"abcdef")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        with pytest.raises(AgentError, match="the agent wrote 5 of 6 bytes"):
            await engine.files.upload(VM, local, "/tmp/up.bin")
        await engine.stop()
    (record,) = [r for r in audit(audit_path) if r["action"] == "upload"]
    assert record["ok"] is False and record["arguments"] == {
        "path": "/tmp/up.bin",
        "local": str(local),
    }
    assert record["vm"] == VM and "the agent wrote 5 of 6 bytes" in record["error"]
    assert [r["execute"] for r in agent.requests][-1] == "guest-file-close"  # handle closed
    assert guest.closed == [GuestFile.HANDLE]


async def test_an_upload_in_chunks_reports_progress_and_records_its_size(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "WRITE_CHUNK", 4)
    guest = GuestFile()
    local = tmp_path / "up.bin"
    local.write_bytes(b"0123456789")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        seen: list[tuple[int, int | None]] = []
        done = await engine.files.upload(
            VM, local, "/tmp/up.bin", progress=lambda d, t: seen.append((d, t))
        )
        await engine.stop()
    assert done == 10 and bytes(guest.written) == b"0123456789"
    assert seen == [(4, 10), (8, 10), (10, 10)]
    opened = [r for r in agent.requests if r.get("execute") == "guest-file-open"]
    assert opened[0]["arguments"] == {"path": "/tmp/up.bin", "mode": "w"}
    (record,) = [r for r in audit(audit_path) if r["action"] == "upload"]
    assert record["ok"] is True and record["arguments"]["bytes"] == 10
    assert record["vm"] == VM and record["error"] is None
    assert guest.closed == [GuestFile.HANDLE]


# -- reading a slice of a guest file (the dashboard's viewer and tail) -------------------


def read_counts(agent: Any) -> list[int]:
    return [
        r["arguments"]["count"] for r in agent.requests if r.get("execute") == "guest-file-read"
    ]


class TrickleFile(GuestFile):
    """Answers each read with at most `most` bytes, and says eof with the last ones."""

    def __init__(self, data: bytes, most: int) -> None:
        super().__init__(data)
        self.most = most

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        return super().read({**args, "count": min(int(args["count"]), self.most)})


class EmptyNowFile(GuestFile):
    """A pipe with nothing in it now: reads answer no bytes and no eof."""

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check(args)
        return {"count": 0, "buf-b64": "", "eof": False}


async def test_a_read_in_chunks_returns_exactly_max_bytes_and_closes_its_handle(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 3)
    guest = GuestFile(b"0123456789")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        part = await engine.files.read(VM, "/f", offset=1, max_bytes=4)
        await engine.stop()
    assert (part.data, part.offset, part.eof, part.size) == (b"1234", 1, False, 10)
    assert read_counts(agent) == [3, 1]  # never more than is left of max_bytes
    assert guest.closed == [GuestFile.HANDLE]


async def test_a_read_stops_at_the_reply_that_says_eof(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 4)
    guest = TrickleFile(b"0123456789", most=4)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        whole = await engine.files.read(VM, "/f", max_bytes=100)
        await engine.stop()
    assert (whole.data, whole.eof, whole.size) == (b"0123456789", True, 10)
    assert read_counts(agent) == [4, 4, 4]  # the third said eof (with data): no fourth


async def test_a_read_that_gets_no_bytes_ends_there_and_says_eof(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = EmptyNowFile(seekable=False)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        empty = await engine.files.read(VM, "/pipe", max_bytes=100)
        nothing = await engine.files.read(VM, "/pipe", max_bytes=0)
        await engine.stop()
    assert (empty.data, empty.eof, empty.size) == (b"", True, None)  # no size: cannot seek
    assert len(read_counts(agent)) == 1
    assert (nothing.data, nothing.eof, nothing.size) == (b"", False, None)  # asked for none
    assert guest.closed == [GuestFile.HANDLE, GuestFile.HANDLE]


async def test_tail_reads_the_end_of_the_file_and_never_more_than_max_bytes(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = GuestFile(b"0123456789")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        end = await engine.files.tail(VM, "/log", max_bytes=4)
        guest.claimed_size = 0  # reported empty, then written to before the read
        grown = await engine.files.tail(VM, "/log", max_bytes=1)
        await engine.stop()
    assert (end.data, end.offset, end.eof, end.size) == (b"6789", 6, True, 10)
    assert len(grown.data) <= 1 and grown.size == 0
    assert read_counts(agent) == [4, 1]
    assert guest.closed == [GuestFile.HANDLE, GuestFile.HANDLE]


# -- reading and listing a simulated guest's files ---------------------------------------


def sim_profiles() -> tuple[GuestProfile, GuestProfile]:
    """A Linux and a Windows guest profile of the simulator."""
    profiles = [make_profile(i) for i in range(40)]
    linux = next(p for p in profiles if not p.windows)
    windows = next(p for p in profiles if p.windows)
    # virtio-win lists guest-exec as disabled unless the guest's policy allows it: allow it
    return linux, dataclasses.replace(windows, disabled_commands=frozenset())


@pytest.fixture
async def sim_engine(tmp_path: Path) -> AsyncIterator[tuple[FleetEngine, SimFleet]]:
    linux, windows = sim_profiles()
    async with SimFleet(tmp_path / "sim", [SimVm("lin", linux), SimVm("win", windows)]) as sim:
        hosts = tmp_path / "hosts.toml"
        hosts.write_text(
            "[settings]\ntimeout = 2.0\naction_timeout = 5.0\n\n"
            '[[hypervisor]]\nname = "sim"\n'
            f"agents = [{json.dumps(str(sim.directory.resolve() / '*.sock'))}]\n"
        )
        engine = FleetEngine(load_config(hosts))
        await engine.poll_once()
        try:
            yield engine, sim
        finally:
            await engine.stop()


async def test_a_directory_listing_of_a_linux_guest_comes_from_its_script(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, _ = sim_engine
    listing = await engine.files.list_dir("sim/lin", "/var/log")
    names = [e.name for e in listing.entries]
    assert {"dmesg", ".hidden"} <= set(names)
    assert listing.vm_id == "sim/lin" and listing.path == "/var/log"
    assert listing.via == "guest-exec" and not listing.truncated
    assert (listing.skipped, listing.more) == (0, 0)
    dmesg = next(e for e in listing.entries if e.name == "dmesg")
    assert dmesg.kind == "file" and dmesg.size == len(b"[    0.000000] Linux version (simulated)\n")
    root = await engine.files.list_dir("sim/lin", "/")
    kinds = [e.kind for e in root.entries]
    assert kinds == sorted(kinds, key=lambda k: k != "dir")  # directories first
    assert "var" in [e.name for e in root.entries if e.kind == "dir"]


async def test_a_windows_guest_is_listed_through_powershell(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, _ = sim_engine
    listing = await engine.files.list_dir("sim/win", "C:\\")
    assert listing.entries and all(e.kind in ("dir", "file") for e in listing.entries)


async def test_a_listing_that_fails_says_what_the_guest_said(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, _ = sim_engine
    with pytest.raises(ListingUnavailable) as raised:
        await engine.files.list_dir("sim/lin", "/no/such/dir")
    assert str(raised.value) == "qgadash-ls: /no/such/dir: No such file or directory"
    with pytest.raises(ListingUnavailable, match="no such VM"):
        await engine.files.list_dir("sim/nobody", "/")


async def test_can_list_says_why_a_guest_cannot_be_listed(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, sim = sim_engine
    files = engine.files
    assert files.can_list("sim/lin") is None
    assert files.can_list("sim/nobody") == "no such VM"
    (result,) = await engine.freeze(["sim/lin"], thaw_after=600)
    assert result.ok, result.error
    await engine.poll_vm("sim/lin")
    assert files.can_list("sim/lin") == "guest-exec is the guest is frozen: open a file by path"
    await engine.thaw(["sim/lin"])
    await engine.poll_vm("sim/lin")
    assert files.can_list("sim/lin") is None
    sim.agent("lin").fault = Fault.SILENT
    await engine.poll_vm("sim/lin")
    assert files.can_list("sim/lin") == "the agent is timeout"


async def test_read_and_tail_return_the_bytes_asked_for_and_the_size(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, sim = sim_engine
    hostname = (sim.agent("lin").profile.hostname + "\n").encode()
    whole = await engine.files.read("sim/lin", "/etc/hostname")
    assert (whole.data, whole.offset, whole.eof, whole.size) == (
        hostname,
        0,
        True,
        len(hostname),
    )
    part = await engine.files.read("sim/lin", "/etc/hostname", offset=2, max_bytes=3)
    assert (part.data, part.offset, part.size) == (hostname[2:5], 2, len(hostname))
    assert not part.eof or len(hostname) <= 5
    tail = await engine.files.tail("sim/lin", "/etc/hostname", max_bytes=4)
    assert (tail.data, tail.offset, tail.eof, tail.size) == (
        hostname[-4:],
        len(hostname) - 4,
        True,
        len(hostname),
    )
    everything = await engine.files.tail("sim/lin", "/etc/hostname", max_bytes=10_000)
    assert (everything.data, everything.offset) == (hostname, 0)


async def test_run_exec_waits_for_the_program_and_passes_its_input(
    sim_engine: tuple[FleetEngine, SimFleet],
) -> None:
    engine, _ = sim_engine

    async def work(caller: Any) -> Any:
        return await files_module.run_exec(
            caller, "/bin/cat", [], timeout=5, request_timeout=2, input_data=b"piped\n"
        )

    status = await engine.with_agent("sim/lin", work)
    assert status.exited and status.exitcode == 0
    assert status.stdout == b"piped\n"


# -- putting a finished download in place ---------------------------------------------------


def test_a_file_that_appeared_during_the_copy_is_not_replaced_and_named_in_the_error(
    tmp_path: Path,
) -> None:
    partial = tmp_path / ".f.partial"
    partial.write_bytes(b"from the guest")
    local = tmp_path / "f"
    local.write_bytes(b"mine")  # written by someone else while the download ran
    with pytest.raises(FileExistsError) as caught:
        files_module._move_into_place(str(partial), local, overwrite=False)
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.EEXIST,
        "exists (not replaced)",
        str(local),
    )
    assert local.read_bytes() == b"mine"


@pytest.mark.parametrize("exists", [True, False])
def test_without_hard_links_a_download_is_renamed_into_place_unless_the_file_appeared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    def no_links(source: str, target: Path) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")  # vfat, some NFS

    monkeypatch.setattr(os, "link", no_links)
    partial = tmp_path / ".f.partial"
    partial.write_bytes(b"from the guest")
    local = tmp_path / "f"
    if exists:
        local.write_bytes(b"mine")
        with pytest.raises(FileExistsError) as caught:
            files_module._move_into_place(str(partial), local, overwrite=False)
        assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
            errno.EEXIST,
            "exists (not replaced)",
            str(local),
        )
        assert local.read_bytes() == b"mine"
    else:
        files_module._move_into_place(str(partial), local, overwrite=False)
        assert local.read_bytes() == b"from the guest" and not partial.exists()


# -- the bounds of a download, to the byte -------------------------------------------------


async def test_a_file_or_a_pipe_of_exactly_max_download_bytes_is_copied_whole(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 16)
    data = bytes(range(64))
    sized, pipe = GuestFile(data), GuestFile(data, seekable=False)
    for n, guest in enumerate((sized, pipe)):
        socket = tmp_path / f"fake{n}.sock"
        async with fake_agent(socket, guest.handlers()) as agent:
            engine = await engine_over(tmp_path, socket, audit_path, max_download_bytes=64)
            assert await engine.files.download(VM, "/f", tmp_path / f"copy{n}") == 64
            await engine.stop()
        assert (tmp_path / f"copy{n}").read_bytes() == data
        assert read_counts(agent) == [16, 16, 16, 16]  # the last said eof: no fifth read


async def test_a_pipe_with_nothing_in_it_downloads_as_an_empty_file_after_one_read(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = EmptyNowFile(seekable=False)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        assert await engine.files.download(VM, "/run/fifo", tmp_path / "fifo") == 0
        await engine.stop()
    assert (tmp_path / "fifo").read_bytes() == b""
    assert len(read_counts(agent)) == 1


def test_a_partial_download_is_a_new_private_hidden_file_beside_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside the target: the same file system, so the finished copy is linked into place
    atomically; never in the working directory."""
    target = tmp_path / "sub" / "report.txt"
    target.parent.mkdir()
    monkeypatch.chdir(tmp_path)
    fd, name = files_module._new_partial(target)
    os.close(fd)
    partial = Path(name)
    assert partial.parent == target.parent
    assert re.fullmatch(r"\.report\.txt\.[0-9a-f]{8}\.partial", partial.name), partial.name
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # nothing in the cwd


class UnclosableFile(GuestFile):
    """Reads fine; its close fails (the agent restarted and forgot the handle)."""

    def close(self, args: dict[str, Any]) -> dict[str, Any]:
        raise FakeError(f"handle '{args.get('handle')}' has not been found")


async def test_a_close_that_fails_does_not_lose_what_was_read(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    guest = UnclosableFile(b"0123456789")
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        part = await engine.files.read(VM, "/f", max_bytes=4)
        assert await engine.files.download(VM, "/f", tmp_path / "f") == 10
        await engine.stop()
    assert part.data == b"0123"
    assert (tmp_path / "f").read_bytes() == b"0123456789"
    assert [r["execute"] for r in agent.requests].count("guest-file-close") == 2


def test_a_partial_is_not_inherited_by_processes_started_meanwhile(tmp_path: Path) -> None:
    """A keeper or guest-exec helper started while a download runs must not hold it open."""
    fd, _name = files_module._new_partial(tmp_path / "f")
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


def test_a_partial_name_already_taken_is_skipped_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["00000000", "11111111"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tokens))
    planted = tmp_path / ".f.00000000.partial"
    planted.symlink_to(tmp_path / "victim")  # planted under the first name: not followed
    fd, name = files_module._new_partial(tmp_path / "f")
    os.close(fd)
    assert Path(name).name == ".f.11111111.partial"
    assert not (tmp_path / "victim").exists()


def test_a_partial_name_taken_every_time_gives_up_with_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / ".f.00000000.partial").write_bytes(b"planted")
    with pytest.raises(FileExistsError) as caught:
        files_module._new_partial(tmp_path / "f")
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.EEXIST,
        "no free temporary name",
        str(tmp_path),
    )
    assert (tmp_path / ".f.00000000.partial").read_bytes() == b"planted"


async def test_a_pipe_past_max_download_bytes_is_cut_before_a_byte_more_is_written(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 16)
    guest = GuestFile(endless=True, seekable=False)
    written: list[int] = []
    async with fake_agent(socket_path, guest.handlers()):
        engine = await engine_over(tmp_path, socket_path, audit_path, max_download_bytes=64)
        with pytest.raises(files_module.DownloadTooLarge, match=r"max_download_bytes \(64\)"):
            await engine.files.download_to(
                VM, "/dev/zero", lambda b: written.append(len(b)), progress=None
            )
        await engine.stop()
    assert written == [16, 16, 16, 16]  # 64 bytes; the fifth chunk was refused, not written


async def test_a_file_that_never_says_eof_is_read_to_its_size_and_not_one_read_more(
    tmp_path: Path, socket_path: Path, audit_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "READ_CHUNK", 16)
    guest = GuestFile(b"x" * 40, endless=True)
    async with fake_agent(socket_path, guest.handlers()) as agent:
        engine = await engine_over(tmp_path, socket_path, audit_path)
        assert await engine.files.download(VM, "/dev/zero-ish", tmp_path / "copy") == 40
        await engine.stop()
    assert read_counts(agent) == [16, 16, 8]


async def test_each_guest_is_listed_with_its_own_program_within_action_timeout(
    sim_engine: tuple[FleetEngine, SimFleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator answers any program; which one went out is what a real guest sees."""
    engine, _ = sim_engine
    sent: list[tuple[str, float]] = []
    real_run_exec = files_module.run_exec

    async def recording(caller: Any, path: str, args: list[str], **kw: Any) -> Any:
        sent.append((path, kw["timeout"]))
        return await real_run_exec(caller, path, args, **kw)

    monkeypatch.setattr(files_module, "run_exec", recording)
    await engine.files.list_dir("sim/win", "C:\\")
    await engine.files.list_dir("sim/lin", "/")
    timeout = engine.settings.action_timeout
    assert sent == [("powershell.exe", timeout), (linux_list_command("/")[0], timeout)]


async def test_a_listing_whose_error_is_not_utf8_still_says_what_the_guest_said(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    def exec_status(args: dict[str, Any]) -> dict[str, Any]:
        err = b"ls: cannot open '/caf\xe9': Permission denied\n"  # a Latin-1 file name
        return {"exited": True, "exitcode": 2, "err-data": base64.b64encode(err).decode()}

    handlers = {
        "guest-info": lambda a: supported(["guest-exec", "guest-exec-status", "guest-ping"]),
        "guest-ping": lambda a: {},
        "guest-exec": lambda a: {"pid": 7},
        "guest-exec-status": exec_status,
    }
    async with fake_agent(socket_path, handlers):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        await engine.poll_vm(VM)
        with pytest.raises(ListingUnavailable) as raised:
            await engine.files.list_dir(VM, "/caf")
        await engine.stop()
    assert str(raised.value) == "ls: cannot open '/caf\ufffd': Permission denied"


def exec_guest(exitcode: int, out: bytes = b"", err: bytes = b"") -> dict[str, Any]:
    """Handlers of an agent whose every guest-exec ends with `exitcode`, `out` and `err`."""
    status = {
        "exited": True,
        "exitcode": exitcode,
        "out-data": base64.b64encode(out).decode(),
        "err-data": base64.b64encode(err).decode(),
    }
    return {
        "guest-info": lambda a: supported(["guest-exec", "guest-exec-status", "guest-ping"]),
        "guest-ping": lambda a: {},
        "guest-exec": lambda a: {"pid": 7},
        "guest-exec-status": lambda a: status,
    }


DIR = b"41ed 0 1700000000 etc\0"
FILE = b"81a4 5 1700000000 motd\0"


@pytest.mark.parametrize(
    ("exitcode", "out", "truncated", "skipped", "more"),
    [
        (0, DIR + FILE, False, 0, 0),
        (TRUNCATED_EXIT, DIR + FILE, True, 0, 0),  # the script stopped at its cap
        (0, DIR + FILE + b"not a record\0", False, 1, 0),
        (0, DIR + FILE + b"81a4 1 1700000000 cut sh", True, 0, 1),  # one entry cut short
    ],
    ids=["whole", "capped", "bad-record", "cut-short"],
)
async def test_a_listing_says_whether_it_is_whole_and_what_it_skipped(
    tmp_path: Path,
    socket_path: Path,
    audit_path: Path,
    exitcode: int,
    out: bytes,
    truncated: bool,
    skipped: int,
    more: int,
) -> None:
    async with fake_agent(socket_path, exec_guest(exitcode, out)):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        await engine.poll_vm(VM)
        listing = await engine.files.list_dir(VM, "/")
        await engine.stop()
    assert [e.name for e in listing.entries] == ["etc", "motd"]
    assert (listing.truncated, listing.skipped, listing.more) == (truncated, skipped, more)


async def test_a_listing_that_fails_silently_names_the_directory(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    async with fake_agent(socket_path, exec_guest(1)):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        await engine.poll_vm(VM)
        with pytest.raises(ListingUnavailable, match=r"^cannot list /srv$"):
            await engine.files.list_dir(VM, "/srv")
        await engine.stop()


class ExecCaller:
    """An agent caller whose program exits after `running` status polls (never if None)."""

    def __init__(self, running: int | None) -> None:
        self.running = running
        self.polls = 0

    async def call(self, name: str, args: Any = None, *, timeout: float) -> Any:
        if name == "guest-exec":
            return {"pid": 7}
        self.polls += 1
        if self.running is not None and self.polls > self.running:
            return {"exited": True, "exitcode": 0}
        return {"exited": False}


async def test_run_exec_polls_a_running_program_less_and_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    caller = ExecCaller(running=8)
    status = await files_module.run_exec(caller, "/bin/true", [], timeout=60, request_timeout=1)  # type: ignore[arg-type]
    assert status.exited and caller.polls == 9
    first = files_module.EXEC_POLL
    assert waits == [min(first * 2**i, 0.5) for i in range(8)]  # doubling, at most 0.5 s
    assert waits[-1] == 0.5


async def test_run_exec_gives_up_on_a_program_that_never_exits_at_its_timeout() -> None:
    caller = ExecCaller(running=None)
    task = asyncio.create_task(
        files_module.run_exec(caller, "/bin/sleep", ["inf"], timeout=0.2, request_timeout=1)  # type: ignore[arg-type]
    )
    done, _ = await asyncio.wait({task}, timeout=30)  # a guard against a hang, not a measure
    if not done:
        task.cancel()
        raise AssertionError("run_exec never gave up on a program that does not exit")
    with pytest.raises(TimeoutError):
        task.result()


async def test_can_list_says_when_the_guests_policy_disables_guest_exec(
    tmp_path: Path, socket_path: Path, audit_path: Path
) -> None:
    info = supported(["guest-exec", "guest-exec-status", "guest-ping"])
    info["supported_commands"][0]["enabled"] = False  # virtio-win's default for guest-exec
    handlers = {"guest-info": lambda a: info, "guest-ping": lambda a: {}}
    async with fake_agent(socket_path, handlers):
        engine = await engine_over(tmp_path, socket_path, audit_path)
        await engine.poll_vm(VM)
        reason = engine.files.can_list(VM)
        await engine.stop()
    assert reason == "guest-exec is disabled by the guest's policy: open a file by path"
