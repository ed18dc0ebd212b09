"""Guest files through the product: reads, chunked writes and reads back, listings, `cp`.

Runs on the shared guest g1; every file it writes lives under /data/product-files/ and
is removed afterwards (the data disk is small).
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import pytest

from qgadash.fleet.files import READ_CHUNK, WRITE_CHUNK
from qgadash.fleet.model import AgentState
from tests.guests.image import KNOWN_FILES, OS_RELEASE
from tests.guests.product import engine_for, run_cli, run_in_guest, snap, vm_id, write_hosts
from tests.guests.vm import Guest

pytestmark = pytest.mark.guest

DIR = "/data/product-files"


def record(into: list[tuple[int, int | None]], done: int, total: int | None) -> None:
    """A transfer's progress callback: each (done, total) it reports, in order."""
    into.append((done, total))


def _binary(size: int, seed: bytes) -> bytes:
    """Every byte value, then pseudo-random bytes (incompressible, not text)."""
    out = bytearray(bytes(range(256)) * 4)
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


async def test_read_write_list_files(tmp_path: Path, shared_guests: list[Guest]) -> None:
    guest = shared_guests[0]
    vm = vm_id(guest)
    async with engine_for(tmp_path, [guest]) as engine:
        await engine.poll_vm(vm)
        assert snap(engine, guest).agent is AgentState.OK, snap(engine, guest).error
        try:
            # Read from /etc: whole, in part, and a file larger than one agent read.
            whole = await engine.files.read(vm, "/etc/os-release")
            assert whole.data == OS_RELEASE and whole.eof and whole.size == len(OS_RELEASE)
            part = await engine.files.read(vm, "/etc/os-release", offset=12, max_bytes=10)
            assert part.data == OS_RELEASE[12:22] and part.offset == 12
            blob = KNOWN_FILES["/etc/qgadash/blob-64k.bin"]
            got = await engine.files.read(vm, "/etc/qgadash/blob-64k.bin")
            assert got.data == blob and got.size == len(blob)

            # Write under /data: > 1 MiB of binary (many write chunks, two read chunks),
            # plus an empty file and one of exactly one write chunk.
            assert (await run_in_guest(engine, guest, f"mkdir -p {DIR}"))["exitcode"] == 0
            payloads = {
                "big.bin": _binary(READ_CHUNK + 300_001, b"big"),  # ~1.3 MiB
                "chunk.bin": _binary(WRITE_CHUNK, b"chunk"),
                "empty.bin": b"",
            }
            progress: dict[str, list[tuple[int, int | None]]] = {n: [] for n in payloads}
            for name, data in payloads.items():
                local = tmp_path / name
                local.write_bytes(data)
                written = await engine.files.upload(
                    vm,
                    local,
                    f"{DIR}/{name}",
                    progress=partial(record, progress[name]),
                )
                assert written == len(data)
            big = payloads["big.bin"]
            assert progress["big.bin"][-1] == (len(big), len(big))
            assert len(progress["big.bin"]) == -(-len(big) // WRITE_CHUNK)  # one per chunk

            # Byte for byte back, through the product...
            for name, data in payloads.items():
                back = tmp_path / f"{name}.back"
                assert await engine.files.download(vm, f"{DIR}/{name}", back) == len(data)
                assert back.read_bytes() == data, name
                assert not list(tmp_path.glob("*.partial")), name  # no temporary left
            tail = await engine.files.tail(vm, f"{DIR}/big.bin", max_bytes=1000)
            assert tail.data == big[-1000:] and tail.size == len(big)
            # ...and as the guest sees it (its own sha256sum, on its own disk).
            sums = await run_in_guest(engine, guest, f"cd {DIR} && sync && sha256sum *.bin")
            guest_sums = {line.split()[1]: line.split()[0] for line in sums["stdout"].splitlines()}
            assert guest_sums == {n: hashlib.sha256(d).hexdigest() for n, d in payloads.items()}

            # Listing through guest-exec.
            listing = await engine.files.list_dir(vm, DIR)
            assert listing.via == "guest-exec" and not listing.truncated
            entries = {e.name: e for e in listing.entries}
            assert set(entries) == set(payloads)
            for name, data in payloads.items():
                assert entries[name].kind == "file" and entries[name].size == len(data)
            etc = {e.name: e for e in (await engine.files.list_dir(vm, "/etc")).entries}
            assert etc["qgadash"].kind == "dir" and etc["os-release"].kind == "file"
            top = {e.name: e.kind for e in (await engine.files.list_dir(vm, "/data")).entries}
            assert top["product-files"] == "dir"
        finally:
            await run_in_guest(engine, guest, f"rm -rf {DIR}")


def test_cli_cp_both_ways(tmp_path: Path, shared_guests: list[Guest]) -> None:
    guest = shared_guests[0]
    vm = vm_id(guest)
    hosts = write_hosts(tmp_path / "hosts.toml", shared_guests)
    data = _binary(200_000, b"cp") + b"\x00\xff\r\n" + os.urandom(1000)
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    remote = f"/data/product-cp-{os.getpid()}.bin"
    try:
        up = run_cli(hosts, "cp", str(src), f"{vm}:{remote}", "--yes", tmp_path=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"copied {len(data)} bytes" in up.stderr

        dst = tmp_path / "down.bin"
        down = run_cli(hosts, "cp", f"{vm}:{remote}", str(dst), tmp_path=tmp_path)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"copied {len(data)} bytes" in down.stderr
        assert dst.read_bytes() == data

        etc = tmp_path / "os-release"
        proc = run_cli(hosts, "cp", f"{vm}:/etc/os-release", str(etc), tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert etc.read_bytes() == OS_RELEASE

        # A missing guest file fails, says why, and leaves no local file behind.
        missing = tmp_path / "missing.bin"
        proc = run_cli(hosts, "cp", f"{vm}:/data/no-such-file", str(missing), tmp_path=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"qgadash: {vm}:/data/no-such-file: "), proc.stderr
        assert "No such file" in proc.stderr, proc.stderr
        assert not missing.exists()
        assert not list(tmp_path.glob("*.partial"))
    finally:
        run_cli(hosts, "exec", "--yes", "--match", vm, "--", "rm", "-f", remote, tmp_path=tmp_path)
