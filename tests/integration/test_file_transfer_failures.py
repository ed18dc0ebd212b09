"""Guest file transfers that fail half-way: a download leaves nothing behind (neither the
file nor its temporary), an upload says it failed, and a read reply carrying more than
was asked for is refused. On simulated guests whose agent breaks mid-transfer, and on a
scripted agent for replies no real agent sends."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent import replies
from qgadash.agent.errors import AgentCommandError, AgentError, AgentProtocolError
from qgadash.fleet import files
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.sim import Fault, SimFleet, SimVm, make_profile
from tests.integration.fakeagent import FakeError, fake_agent, supported

BIG = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: two reads of READ_CHUNK
assert len(BIG) > files.READ_CHUNK


def audit_of(engine: FleetEngine) -> list[dict[str, Any]]:
    assert engine.audit is not None
    return [json.loads(line) for line in engine.audit.path.read_text().splitlines()]


def break_after_first(fleet: SimFleet, vm: str, fault: Fault) -> Callable[[int, int | None], None]:
    """A progress callback that breaks the agent once the first chunk went through."""

    def progress(done: int, total: int | None) -> None:
        fleet.agent(vm).fault = fault

    return progress


# -- on simulated guests ----------------------------------------------------------------


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[SimFleet, FleetEngine]]:
    async with SimFleet(tmp_path / "sim", [SimVm("vm0", make_profile(0))]) as fleet:
        hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=2.0)
        engine = FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "audit.jsonl"))
        await engine.poll_once()
        try:
            yield fleet, engine
        finally:
            await engine.stop()


@pytest.mark.parametrize("fault", [Fault.DISCONNECT, Fault.GARBAGE])
async def test_a_download_that_fails_midway_leaves_neither_the_file_nor_a_partial(
    tmp_path: Path, sim: tuple[SimFleet, FleetEngine], fault: Fault
) -> None:
    fleet, engine = sim
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    assert await engine.files.upload("sim/vm0", source, "/tmp/big.bin") == len(BIG)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AgentError):
        await engine.files.download(
            "sim/vm0",
            "/tmp/big.bin",
            out / "big.bin",
            progress=break_after_first(fleet, "vm0", fault),
        )
    assert sorted(p.name for p in out.iterdir()) == []  # hidden temporaries included
    record = audit_of(engine)[-1]
    assert (record["action"], record["ok"]) == ("download", False) and record["error"]


async def test_a_download_that_succeeds_is_whole_and_alone(
    tmp_path: Path, sim: tuple[SimFleet, FleetEngine]
) -> None:
    """The control for the test above: the same copy without the fault."""
    _, engine = sim
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    await engine.files.upload("sim/vm0", source, "/tmp/big.bin")
    out = tmp_path / "out"
    out.mkdir()
    assert await engine.files.download("sim/vm0", "/tmp/big.bin", out / "big.bin") == len(BIG)
    assert [p.name for p in out.iterdir()] == ["big.bin"]
    assert (out / "big.bin").read_bytes() == BIG


@pytest.mark.parametrize("fault", [Fault.DISCONNECT, Fault.GARBAGE])
async def test_an_upload_that_fails_midway_says_so(
    tmp_path: Path, sim: tuple[SimFleet, FleetEngine], fault: Fault
) -> None:
    fleet, engine = sim
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    with pytest.raises(AgentError):
        await engine.files.upload(
            "sim/vm0", source, "/tmp/big.bin", progress=break_after_first(fleet, "vm0", fault)
        )
    record = audit_of(engine)[-1]
    assert (record["action"], record["ok"]) == ("upload", False) and record["error"]
    assert "bytes" not in record["arguments"]  # no size claimed for a copy that failed


# -- on a scripted agent ----------------------------------------------------------------


Reply = Callable[[int, dict[str, Any]], "dict[str, Any] | None"]


class ScriptedFile:
    """One guest file; `read_reply` and `write_reply` may replace the honest replies:
    called with the call's number and arguments, they return a reply, None for the
    honest one, or raise FakeError for an error reply."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.reads = 0
        self.writes = 0
        self.read_reply: Reply | None = None
        self.write_reply: Reply | None = None

    def handlers(self) -> dict[str, Any]:
        names = ["guest-file-open", "guest-file-read", "guest-file-write", "guest-file-seek"]
        return {
            "guest-info": lambda a: supported([*names, "guest-file-close", "guest-ping"]),
            "guest-ping": lambda a: {},
            "guest-file-open": lambda a: 1000,
            "guest-file-seek": self.seek,
            "guest-file-read": self.read,
            "guest-file-write": self.write,
            "guest-file-close": lambda a: {},
        }

    def seek(self, args: dict[str, Any]) -> dict[str, Any]:
        end = args["whence"] in (2, "end")  # an int: what every agent era takes
        self.position = (len(self.data) if end else 0) + int(args["offset"])
        return {"position": self.position, "eof": False}

    def read(self, args: dict[str, Any]) -> dict[str, Any]:
        self.reads += 1
        scripted = self.read_reply(self.reads, args) if self.read_reply else None
        if scripted is not None:
            return scripted
        chunk = self.data[self.position : self.position + int(args["count"])]
        self.position += len(chunk)
        eof = self.position >= len(self.data)
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": eof}

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        scripted = self.write_reply(self.writes, args) if self.write_reply else None
        if scripted is not None:
            return scripted
        return {"count": len(base64.b64decode(args["buf-b64"])), "eof": False}


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[ScriptedFile, FleetEngine]]:
    guest = ScriptedFile(BIG)
    socket = tmp_path / "agent.sock"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        "[settings]\ntimeout = 2.0\naction_timeout = 5.0\n\n"
        f'[[vm]]\nname = "fake"\nagent = {json.dumps(str(socket))}\n'
    )
    async with fake_agent(socket, guest.handlers()):
        engine = FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "audit.jsonl"))
        await engine.discover()
        try:
            yield guest, engine
        finally:
            await engine.stop()


async def test_a_read_error_midway_leaves_nothing_behind(
    tmp_path: Path, scripted: tuple[ScriptedFile, FleetEngine]
) -> None:
    guest, engine = scripted

    def failing_second(n: int, args: dict[str, Any]) -> None:
        if n == 2:
            raise FakeError("failed to read file: Input/output error")

    guest.read_reply = failing_second
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AgentCommandError, match="Input/output error"):
        await engine.files.download("local/fake", "/var/lib/big", out / "big")
    assert guest.reads == 2
    assert [p.name for p in out.iterdir()] == []
    assert audit_of(engine)[-1]["ok"] is False


async def test_a_read_reply_with_more_than_was_asked_is_refused(
    tmp_path: Path, scripted: tuple[ScriptedFile, FleetEngine]
) -> None:
    """count matches the data, but both exceed the count asked for: the agent (or what
    speaks for it) is not to be trusted with the operator's disk."""
    guest, engine = scripted

    def too_much(n: int, args: dict[str, Any]) -> dict[str, Any]:
        chunk = b"\x00" * (int(args["count"]) + 1)
        return {"count": len(chunk), "buf-b64": base64.b64encode(chunk).decode(), "eof": False}

    guest.read_reply = too_much
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AgentProtocolError, match="guest-file-read"):
        await engine.files.download("local/fake", "/var/lib/big", out / "big")
    assert guest.reads == 1  # refused at the first reply, not after the whole file
    assert [p.name for p in out.iterdir()] == []
    with pytest.raises(AgentProtocolError, match="guest-file-read"):
        await engine.files.read("local/fake", "/var/lib/big", max_bytes=100)


def test_the_read_reply_parser_refuses_more_data_than_asked() -> None:
    five = base64.b64encode(b"12345").decode()
    assert replies.parse_file_read({"count": 5, "buf-b64": five}, 5).data == b"12345"
    with pytest.raises(AgentProtocolError):
        replies.parse_file_read({"count": 5, "buf-b64": five}, 4)
    with pytest.raises(AgentProtocolError):  # a count that does not match the data
        replies.parse_file_read({"count": 4, "buf-b64": five}, 10)


async def test_a_short_write_midway_fails_the_upload(
    tmp_path: Path, scripted: tuple[ScriptedFile, FleetEngine]
) -> None:
    guest, engine = scripted

    def short_second(n: int, args: dict[str, Any]) -> dict[str, Any]:
        sent = len(base64.b64decode(args["buf-b64"]))
        return {"count": sent - 1 if n == 2 else sent, "eof": False}

    guest.write_reply = short_second
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    with pytest.raises(AgentProtocolError, match="wrote"):
        await engine.files.upload("local/fake", source, "/var/lib/big")
    assert guest.writes == 2  # stopped at the short write
    record = audit_of(engine)[-1]
    assert (record["action"], record["ok"]) == ("upload", False)
