"""--log-file and --debug: what went wrong is in the log (0600), nothing on stderr."""

from __future__ import annotations

import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.sim import Fault, SimFleet
from tests.integration.test_freeze_safety import Cli, write_hosts


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    async with SimFleet.healthy(tmp_path / "sim", 2) as sim:
        yield sim


async def test_a_failed_thaw_and_the_signal_are_in_the_log_file(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet, action_timeout=0.5, thaw_retry_for=1)
    log = tmp_path / "logs" / "qgadash.log"
    cli = await Cli.start(
        hosts, tmp_path / "state", "--log-file", str(log), "freeze", "--yes", "--thaw-after", "600"
    )
    await cli.wait_for_line("thawing in")
    fleet.agent(fleet.vms[0].name).fault = Fault.SILENT
    cli.proc.send_signal(signal.SIGTERM)
    assert await cli.wait(60) == 1, cli.output()
    text = log.read_text()
    assert "SIGTERM received" in text
    assert f"sim/{fleet.vms[0].name}: thaw failed" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "WARNING" not in cli.output()  # the log went to the file, not the terminal


async def test_debug_needs_a_log_file(tmp_path: Path, fleet: SimFleet) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    cli = await Cli.start(hosts, tmp_path / "state", "--debug", "status")
    assert await cli.wait(30) == 2
    assert "--debug needs --log-file" in cli.output()
