"""One command policy for every verb: the raw `agent` passthrough obeys `--yes` and
`--read-only` like the rest, a raw freeze is held by the freeze guard, and the audit log
keeps command lines out unless asked to."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.agent.policy import NO_REPLY_COMMANDS, POLICIES, changes_guest, command_policy
from qgadash.fleet.audit import AuditLog
from qgadash.sim import SimFleet
from tests.integration.test_freeze_safety import Cli, actions, audit_records, write_hosts


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    async with SimFleet.healthy(tmp_path / "sim", 2) as sim:
        yield sim


def test_unknown_commands_are_treated_as_changing_the_guest() -> None:
    assert changes_guest("guest-made-up-by-a-newer-agent")
    assert not changes_guest("guest-get-osinfo")
    assert changes_guest("guest-file-open", {"path": "/etc/x", "mode": "w"})
    assert not changes_guest("guest-file-open", {"path": "/etc/x", "mode": "r"})
    assert {
        "guest-shutdown",
        "guest-suspend-ram",
        "guest-suspend-disk",
        "guest-suspend-hybrid",
    } == NO_REPLY_COMMANDS
    assert all(p.changes_guest for p in POLICIES.values() if p.freeze or p.no_reply)
    assert command_policy("guest-fsfreeze-freeze-list").freeze


async def test_a_raw_command_that_changes_the_guest_needs_yes_without_a_terminal(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    state = tmp_path / "state"
    vm = f"sim/{fleet.vms[0].name}"
    cli = await Cli.start(hosts, state, "agent", vm, "guest-fstrim")
    assert await cli.wait(30) == 2, cli.output()
    assert "refusing without a terminal; add --yes" in cli.output()
    cli = await Cli.start(hosts, state, "agent", vm, "guest-get-osinfo")  # reads need none
    assert await cli.wait(30) == 0, cli.output()
    cli = await Cli.start(hosts, state, "agent", "--yes", vm, "guest-fstrim")
    assert await cli.wait(30) == 0, cli.output()


async def test_read_only_refuses_a_raw_command_that_changes_the_guest(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    vm = f"sim/{fleet.vms[0].name}"
    cli = await Cli.start(
        hosts, tmp_path / "state", "--read-only", "agent", "--yes", vm, "guest-set-time"
    )
    assert await cli.wait(30) == 2, cli.output()
    assert "read-only mode" in cli.output()


async def test_a_raw_freeze_is_held_by_the_guard_and_thawed_by_its_deadline(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    state = tmp_path / "state"
    name = fleet.vms[0].name
    cli = await Cli.start(
        hosts, state, "agent", "--yes", "--thaw-after", "1", f"sim/{name}", "guest-fsfreeze-freeze"
    )
    assert await cli.wait(30) == 0, cli.output()
    assert not fleet.agent(name).frozen
    assert actions(state, "keeper armed") == [f"sim/{name}"]
    assert actions(state, "thaw (deadline)") == [f"sim/{name}"]


async def test_exec_command_lines_are_masked_in_the_audit_unless_asked(
    tmp_path: Path, fleet: SimFleet
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", fleet)
    vm = f"sim/{fleet.vms[0].name}"
    state = tmp_path / "state"
    cli = await Cli.start(hosts, state, "exec", "--yes", "--match", vm, "--", "mysql", "-pS3cr3t")
    await cli.wait(30)
    cli = await Cli.start(
        hosts,
        state,
        "agent",
        "--yes",
        vm,
        "guest-exec",
        json.dumps({"path": "/bin/true", "arg": ["-pS3cr3t"], "env": ["PGPASSWORD=S3cr3t"]}),
    )
    await cli.wait(30)
    log = (state / "qgadash" / "audit.jsonl").read_text()
    assert "S3cr3t" not in log
    records = audit_records(state)
    assert records[0]["arguments"] == {"argv": ["mysql", "<1 arguments hidden>"]}
    assert records[1]["arguments"]["env"] == "<1 variables hidden>"  # type: ignore[index]
    cli = await Cli.start(
        hosts, state, "--audit-argv", "exec", "--yes", "--match", vm, "--", "echo", "kept"
    )
    await cli.wait(30)
    assert audit_records(state)[-1]["arguments"] == {"argv": ["echo", "kept"]}


def test_the_audit_log_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "qgadash" / "audit.jsonl"
    path.parent.mkdir(parents=True, mode=0o755)
    os.chmod(path.parent, 0o755)
    AuditLog(path).record("freeze", "hv/vm", {"password": "x"}, True, None, 1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert '"password": "***"' in path.read_text()


def test_an_unwritable_audit_log_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = AuditLog(blocker / "audit.jsonl")
    log.record("thaw", "hv/vm", None, True, None, 1.0)
    assert log.failed is not None and "cannot write the audit log" in log.failed
