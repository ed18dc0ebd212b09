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


async def test_debug_traces_each_vms_channel_with_secrets_and_payloads_masked(
    tmp_path: Path, fleet: SimFleet
) -> None:
    """--debug shows the bytes each VM's channel carried (what a misbehaving agent said),
    never an exec's argv or env, nor what the guest printed."""
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    log = tmp_path / "qgadash.log"
    vm = f"sim/{fleet.vms[0].name}"
    cli = await Cli.start(
        hosts, tmp_path / "state", "--log-file", str(log), "--debug",
        "exec", "--match", vm, "--yes", "--", "echo", "S3cr3t-argument",
    )  # fmt: skip
    assert await cli.wait(60) == 0, cli.output()
    assert "S3cr3t-argument" in cli.output()  # the operator sees the output...
    text = log.read_text()
    assert "S3cr3t" not in text  # ...the log has neither the argument nor the output
    assert "UzNjcjN0" not in text  # (nor the output's base64)
    assert f'{vm} -> {{"execute":"guest-exec","arguments":{{"path":"echo","arg":"***"' in text
    assert f'{vm} <- {{"return": {{"pid": ' in text
    assert '"out-data": "<' in text  # exec-status's output, as a length


async def test_without_debug_no_channel_is_traced(tmp_path: Path, fleet: SimFleet) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    log = tmp_path / "qgadash.log"
    cli = await Cli.start(hosts, tmp_path / "state", "--log-file", str(log), "status")
    assert await cli.wait(60) == 0, cli.output()
    assert " -> " not in (log.read_text() if log.exists() else "")
