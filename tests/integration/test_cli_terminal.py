"""The CLI on a terminal (a pty) and on pipes: progress and the freeze countdown on
stderr only for a terminal, column headers, plurals, and a "no" that says so."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.sim import SimFleet, SimVm, make_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    async with SimFleet(
        tmp_path / "sim", [SimVm(f"vm{i}", make_profile(i)) for i in range(3)]
    ) as sim:
        yield sim


def hosts_for(tmp_path: Path, fleet: SimFleet) -> Path:
    hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=1.0, session="per-poll")
    return hosts


def env_for(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")


class Terminal:
    """qgadash ARGS with a pty as stdin, stdout and stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.seen = bytearray()

    @classmethod
    async def start(cls, hosts: Path, tmp_path: Path, *args: str) -> Terminal:
        master, slave = os.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qgadash", "--hosts", str(hosts), *args,
            stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env_for(tmp_path),
        )  # fmt: skip
        os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master)

    def _read(self) -> bool:
        try:
            self.seen.extend(os.read(self.master, 65536))
        except BlockingIOError:
            pass
        except OSError:
            return False  # EIO: the other side is gone
        return True

    async def read_until(self, text: bytes, seconds: float = 30) -> None:
        give_up = time.monotonic() + seconds
        while text not in self.seen:
            if not self._read() or time.monotonic() > give_up:
                raise AssertionError(f"{text!r} not on the terminal: {bytes(self.seen)!r}")
            await asyncio.sleep(0.02)

    async def finish(self, seconds: float = 30) -> int:
        code = await asyncio.wait_for(self.proc.wait(), seconds)
        self._read()
        return code

    def close(self) -> None:
        os.close(self.master)
        if self.proc.returncode is None:
            self.proc.kill()


async def test_freeze_on_a_terminal_shows_progress_a_countdown_and_a_table(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = hosts_for(tmp_path, fleet)
    term = await Terminal.start(
        hosts, tmp_path, "freeze", "--match", "sim/vm0", "--thaw-after", "3"
    )
    try:
        await term.read_until(b"[y/N]")
        assert b"Freeze 1 VM (sim/vm0), thaw after 3 s?" in term.seen
        os.write(term.master, b"y\n")
        await term.read_until(b"thaw in 0:0")  # the live countdown, while the hold lasts
        assert b"\xe2\x9d\x84 1 VM frozen" in term.seen  # ❄
        assert b"freeze 1 VM" in term.seen and b"0/1" in term.seen  # the progress bar
        assert await term.finish() == 0
        out = bytes(term.seen).decode(errors="replace")
        assert "VM" in out and "OUTCOME" in out and "DETAIL" in out
        assert "thawed: 1 VM\r\n" in out
        assert not fleet.agent("vm0").frozen
    finally:
        term.close()


async def test_no_at_the_prompt_says_nothing_was_done(tmp_path: Path, fleet: SimFleet) -> None:
    hosts = hosts_for(tmp_path, fleet)
    term = await Terminal.start(hosts, tmp_path, "shutdown", "--match", "sim/vm1")
    try:
        await term.read_until(b"[y/N]")
        assert b"Shut down (powerdown) 1 VM (sim/vm1)?" in term.seen
        os.write(term.master, b"n\n")
        assert await term.finish() == 1
        assert b"not confirmed; nothing was done." in term.seen
        assert fleet.is_listening("vm1") and not fleet.agent("vm1").powered_off
    finally:
        term.close()


async def test_on_pipes_there_is_no_progress_and_no_countdown(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = hosts_for(tmp_path, fleet)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qgadash", "--hosts", str(hosts),
        "freeze", "--yes", "--thaw-after", "3",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env_for(tmp_path),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    lines = out.decode().splitlines()
    assert lines[0].split() == ["VM", "OUTCOME", "DETAIL"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["sim/vm0", "ok"],
        ["sim/vm1", "ok"],
        ["sim/vm2", "ok"],
    ]
    assert "thaw in" not in err.decode() and "\x1b" not in err.decode()
    assert "thawed: 3 VMs" in err.decode()
