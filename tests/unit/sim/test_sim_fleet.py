"""The simulated fleet over real unix sockets, driven by a bare asyncio client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qgadash.sim.fleet import SimFleet, SimVm
from qgadash.sim.profiles import Fault, make_profile

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes), on tmpfs if any."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="qsim", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running(sockdir: Path, vms: list[SimVm]) -> AsyncIterator[SimFleet]:
    async with SimFleet(sockdir, vms) as fleet:
        yield fleet


async def connect(fleet: SimFleet, name: str) -> Conn:
    return await asyncio.open_unix_connection(str(fleet.socket_path(name)), limit=1 << 24)


async def line(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout)


async def request(
    conn: Conn, command: str, arguments: dict[str, object] | None = None, rid: object = None
) -> dict[str, object]:
    reader, writer = conn
    message: dict[str, object] = {"execute": command}
    if arguments is not None:
        message["arguments"] = arguments
    if rid is not None:
        message["id"] = rid
    writer.write(json.dumps(message).encode())
    reply = json.loads(await line(reader))
    assert isinstance(reply, dict)
    return reply


async def nothing_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return data == b""  # EOF also counts as "no reply"


def vm(name: str, fault: Fault = Fault.NONE, index: int = 0) -> SimVm:
    return SimVm(name, make_profile(index), fault)


# --- the protocol over a socket ----------------------------------------------------------


async def test_ff_then_sync_delimited_gives_parse_error_then_ff_prefixed_reply(
    sockdir: Path,
) -> None:
    async with running(sockdir, [vm("a")]) as fleet:
        reader, writer = await connect(fleet, "a")
        writer.write(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":123456789}}')
        first = await line(reader)
        assert json.loads(first) == {
            "error": {"class": "GenericError", "desc": "JSON parse error, stray '\ufffd'"}
        }
        assert await line(reader) == b'\xff{"return": 123456789}\n'
        writer.close()


async def test_pipelined_requests_are_answered_in_order_with_ids(sockdir: Path) -> None:
    async with running(sockdir, [vm("a")]) as fleet:
        reader, writer = await connect(fleet, "a")
        writer.write(
            b'{"execute":"guest-ping","id":1}'
            b'{"execute":"guest-get-host-name","id":"two"}\n'
            b'{"execute":"guest-fsfreeze-status","id":{"three":[3]}}'
            b'{"execute":"guest-ping"}'
        )
        assert json.loads(await line(reader)) == {"return": {}, "id": 1}
        assert json.loads(await line(reader))["id"] == "two"
        assert json.loads(await line(reader)) == {"return": "thawed", "id": {"three": [3]}}
        assert json.loads(await line(reader)) == {"return": {}}
        writer.close()


async def test_disabled_and_unknown_commands(sockdir: Path) -> None:
    windows = next(make_profile(i) for i in range(20) if make_profile(i).windows)
    async with running(sockdir, [SimVm("w", windows)]) as fleet:
        conn = await connect(fleet, "w")
        reply = await request(conn, "guest-exec", {"path": "cmd.exe"}, rid=5)
        assert reply == {
            "id": 5,
            "error": {
                "class": "CommandNotFound",
                "desc": "Command guest-exec has been disabled: the command is not allowed",
            },
        }
        reply = await request(conn, "guest-frobnicate")
        assert reply["error"] == {
            "class": "CommandNotFound",
            "desc": "The command guest-frobnicate has not been found",
        }
        conn[1].close()


async def test_frozen_refuses_exec_but_allows_thaw(sockdir: Path) -> None:
    async with running(sockdir, [vm("f", Fault.FROZEN)]) as fleet:
        conn = await connect(fleet, "f")
        assert (await request(conn, "guest-fsfreeze-status"))["return"] == "frozen"
        refused = await request(conn, "guest-exec", {"path": "/bin/true"})
        assert refused["error"] == {
            "class": "CommandNotFound",
            "desc": "Command guest-exec has been disabled: the agent is in frozen state",
        }
        assert (await request(conn, "guest-fsfreeze-thaw"))["return"] == 2
        assert "pid" in (await request(conn, "guest-exec", {"path": "/bin/true"}))["return"]  # type: ignore[operator]
        conn[1].close()


async def test_no_reply_to_guest_shutdown(sockdir: Path) -> None:
    async with running(sockdir, [vm("s")]) as fleet:
        reader, writer = await connect(fleet, "s")
        writer.write(b'{"execute":"guest-shutdown","arguments":{"mode":"halt"},"id":1}')
        assert await nothing_within(reader, 0.4)
        writer.close()


async def test_listing_command_over_the_socket(sockdir: Path) -> None:
    async with running(sockdir, [vm("l")]) as fleet:
        conn = await connect(fleet, "l")
        script = "cd \"$1\" && stat -c '%f %s %Y %n' -- .[!.]* *"
        started = await request(
            conn,
            "guest-exec",
            {
                "path": "/bin/sh",
                "arg": ["-c", script, "qgadash-ls", "/etc"],
                "capture-output": True,
            },
        )
        pid = started["return"]["pid"]  # type: ignore[index]
        status: dict[str, object] = {}
        for _ in range(50):
            status = (await request(conn, "guest-exec-status", {"pid": pid}))["return"]  # type: ignore[assignment]
            if status["exited"]:
                break
            await asyncio.sleep(0.02)
        assert status["exitcode"] == 0
        lines = base64.b64decode(str(status["out-data"])).decode().splitlines()
        names = [row.split(" ", 3)[3] for row in lines]
        assert names == sorted(names) and "hostname" in names and "os-release" in names
        mode, size, mtime, _ = lines[names.index("hostname")].split(" ", 3)
        assert mode == "81a4" and int(size) > 0 and int(mtime) > 1_600_000_000
        gone = await request(conn, "guest-exec-status", {"pid": pid})
        assert gone["error"] == {"class": "GenericError", "desc": "Invalid parameter 'pid'"}
        conn[1].close()


async def test_second_client_is_served_only_after_the_first_leaves(sockdir: Path) -> None:
    async with running(sockdir, [vm("one")]) as fleet:
        first = await connect(fleet, "one")
        assert (await request(first, "guest-ping", rid=1))["id"] == 1
        second_reader, second_writer = await connect(fleet, "one")  # connect succeeds
        second_writer.write(b'{"execute":"guest-ping","id":2}')
        assert await nothing_within(second_reader, 0.3)
        assert (await request(first, "guest-ping", rid=3))["id"] == 3  # first still served
        first[1].close()
        assert json.loads(await line(second_reader)) == {"return": {}, "id": 2}
        second_writer.close()


async def test_reply_to_a_client_that_left_goes_to_the_next_client(sockdir: Path) -> None:
    async with running(sockdir, [vm("slow", Fault.SLOW)]) as fleet:
        _reader, writer = await connect(fleet, "slow")
        writer.write(b'{"execute":"guest-ping","id":"stale"}')
        writer.close()
        # The agent answers after 1.5 s, to nobody: the server keeps it for the next client.
        server = fleet._servers["slow"]
        deadline = time.monotonic() + 5
        while not server._backlog:
            assert time.monotonic() < deadline, "the reply was never written"
            await asyncio.sleep(0.02)
        reader2, writer2 = await connect(fleet, "slow")
        assert json.loads(await line(reader2)) == {"return": {}, "id": "stale"}
        writer2.close()


# --- faults --------------------------------------------------------------------------------


async def test_faults_do_what_they_say(sockdir: Path) -> None:
    faults = [
        Fault.SILENT,
        Fault.GARBAGE,
        Fault.ACCEPT_CLOSE,
        Fault.FF_FLOOD,
        Fault.MARKUP,
        Fault.SYNC_ONLY,
        Fault.ENDLESS,
        Fault.DISCONNECT,
        Fault.OVERSIZE,
        Fault.REPEATED_IDS,
        Fault.WRONG_IDS,
        Fault.INVALID_UTF8,
        Fault.DEEP_NESTING,
    ]
    vms = [vm(f.value, f, i) for i, f in enumerate(faults)]
    sync = b'\xff{"execute":"guest-sync-delimited","arguments":{"id":77}}'

    async with running(sockdir, vms) as fleet:

        async def silent() -> None:
            reader, writer = await connect(fleet, "silent")
            writer.write(sync)
            assert await nothing_within(reader, 1.0)
            writer.close()

        async def garbage() -> None:
            reader, writer = await connect(fleet, "garbage")
            writer.write(b'{"execute":"guest-ping"}')
            data = await line(reader)
            with pytest.raises(ValueError):
                json.loads(data)
            writer.close()

        async def accept_close() -> None:
            reader, writer = await connect(fleet, "accept-close")
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()

        async def ff_flood() -> None:
            reader, writer = await connect(fleet, "ff-flood")
            writer.write(b'{"execute":"guest-ping"}')
            data = await asyncio.wait_for(reader.readexactly(65536), 2)
            assert data == b"\xff" * 65536
            writer.close()

        async def markup() -> None:
            conn = await connect(fleet, "markup")
            host = (await request(conn, "guest-get-host-name"))["return"]["host-name"]  # type: ignore[index]
            assert "[bold red]" in host and "\x1b[31m" in host and "\x1b]0;" in host
            assert "\r" in host and "\x00" in host and "[link=" in host
            os_name = (await request(conn, "guest-get-osinfo"))["return"]["pretty-name"]  # type: ignore[index]
            assert "[bold red]" in os_name
            conn[1].close()

        async def sync_only() -> None:
            reader, writer = await connect(fleet, "sync-only")
            writer.write(sync)
            assert await line(reader) == b'\xff{"return": 77}\n'
            writer.write(b'{"execute":"guest-ping"}')
            assert await nothing_within(reader, 0.5)
            writer.close()

        async def endless() -> None:
            reader, writer = await connect(fleet, "endless")
            writer.write(b'{"execute":"guest-ping"}')
            got = 0
            while got < 2 << 20:
                chunk = await asyncio.wait_for(reader.read(1 << 16), 2)
                assert chunk and b"\n" not in chunk
                got += len(chunk)
            writer.close()

        async def disconnect() -> None:
            reader, writer = await connect(fleet, "disconnect")
            writer.write(sync)
            await line(reader)
            assert await line(reader) == b'\xff{"return": 77}\n'
            writer.write(b'{"execute":"guest-get-osinfo"}')
            rest = await asyncio.wait_for(reader.read(), 2)
            assert rest and not rest.endswith(b"\n")  # half a reply, then EOF
            writer.close()

        async def oversize() -> None:
            reader, writer = await connect(fleet, "oversize")
            writer.write(b'{"execute":"guest-get-host-name","id":1}')
            size = 0
            while True:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
                assert chunk
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    break
            assert size > 16 << 20
            writer.close()

        async def repeated() -> None:
            reader, writer = await connect(fleet, "repeated-ids")
            writer.write(b'{"execute":"guest-ping","id":4}')
            assert await line(reader) == await line(reader) == b'{"return": {}, "id": 4}\n'
            writer.close()

        async def wrong() -> None:
            reader, writer = await connect(fleet, "wrong-ids")
            writer.write(b'{"execute":"guest-ping","id":4}')
            assert json.loads(await line(reader))["id"] != 4
            writer.close()

        async def invalid_utf8() -> None:
            reader, writer = await connect(fleet, "invalid-utf8")
            writer.write(b'{"execute":"guest-get-host-name"}')
            with pytest.raises(UnicodeDecodeError):
                (await line(reader)).decode("utf-8")
            writer.close()

        async def deep() -> None:
            reader, writer = await connect(fleet, "deep-nesting")
            writer.write(b'{"execute":"guest-get-users","id":1}')
            assert (await line(reader)).count(b"[") >= 100_000
            writer.close()

        await asyncio.gather(
            silent(),
            garbage(),
            accept_close(),
            ff_flood(),
            markup(),
            sync_only(),
            endless(),
            disconnect(),
            oversize(),
            repeated(),
            wrong(),
            invalid_utf8(),
            deep(),
        )


async def test_powerdown_removes_the_socket_and_power_on_restores_it(sockdir: Path) -> None:
    async with running(sockdir, [vm("p")]) as fleet:
        reader, writer = await connect(fleet, "p")
        writer.write(b'{"execute":"guest-shutdown"}')
        assert await asyncio.wait_for(reader.read(), 4) == b""  # closed ~2 s later, no reply
        assert not fleet.socket_path("p").exists()
        fleet.power_on("p")
        conn = await connect(fleet, "p")
        assert (await request(conn, "guest-ping", rid=1)) == {"return": {}, "id": 1}
        conn[1].close()


# --- scale and the command line -------------------------------------------------------


async def test_thousand_vms_start_and_each_answers_a_sync(sockdir: Path) -> None:
    count = 1000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    fleet = SimFleet.healthy(sockdir, count, faults={Fault.SILENT: 0})
    await fleet.start()
    startup = time.perf_counter() - started
    try:
        limit = asyncio.Semaphore(100)

        async def sync_one(name: str, sync_id: int) -> bytes:
            async with limit:
                reader, writer = await connect(fleet, name)
                writer.write(
                    b'\xff{"execute":"guest-sync-delimited","arguments":{"id":%d}}' % sync_id
                )
                await line(reader, 10)
                reply = await line(reader, 10)
                writer.close()
                return reply

        began = time.perf_counter()
        got = await asyncio.gather(*(sync_one(v.name, i) for i, v in enumerate(fleet.vms)))
        syncs = time.perf_counter() - began
        assert got == [b'\xff{"return": %d}\n' % i for i in range(count)]
    finally:
        await fleet.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"\n1000 VMs: start {startup:.2f} s, 1000 connect+sync {syncs:.2f} s, "
        f"peak RSS {rss_after / 1024:.0f} MiB (+{(rss_after - rss_before) / 1024:.0f} MiB)"
    )
    assert not list(sockdir.glob("*.sock"))


def test_command_line_serves_a_fleet_across_processes(sockdir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qgadash.sim",
            "--count",
            "30",
            "--dir",
            str(sockdir),
            "--procs",
            "2",
            "--fault",
            "silent=2",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        assert len(list(sockdir.glob("*.sock"))) == 30
        hosts = (sockdir / "hosts.toml").read_text()
        assert 'name = "sim"' in hosts and "*.sock" in hosts and 'session = "held"' in hosts
        reply = asyncio.run(_ping(sockdir / "vm-00029.sock"))  # served by the child
        assert reply == b'{"return": {}, "id": 1}\n'
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert not list(sockdir.glob("*.sock"))


async def _ping(path: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b'{"execute":"guest-ping","id":1}')
    reply = await line(reader)
    writer.close()
    return reply
