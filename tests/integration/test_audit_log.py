"""The audit log through the engine, on simulated guests: one line per VM per action,
secrets never written, payloads as their length, and a log that cannot be written is
reported without stopping the action."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.sim import Fault, SimFleet, SimVm, make_profile

GOOD = ["sim/vm0", "sim/vm1", "sim/vm2"]
BROKEN = "sim/vm3"  # frozen by someone else: refuses freeze and fstrim


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    vms = [SimVm(f"vm{i}", make_profile(i)) for i in range(3)]
    vms.append(SimVm("vm3", make_profile(3), Fault.FROZEN))
    async with SimFleet(tmp_path / "sim", vms) as sim:
        yield sim


@pytest.fixture
async def engine(tmp_path: Path, fleet: SimFleet) -> AsyncIterator[FleetEngine]:
    hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=1.0)
    engine = FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "state" / "audit.jsonl"))
    await engine.poll_once()
    try:
        yield engine
    finally:
        await engine.stop()


def records(engine: FleetEngine) -> list[dict[str, Any]]:
    assert engine.audit is not None
    return [json.loads(line) for line in engine.audit.path.read_text().splitlines()]


async def test_every_bulk_action_writes_one_record_per_vm_with_its_outcome(
    engine: FleetEngine,
) -> None:
    everyone = [*GOOD, BROKEN]
    frozen = await engine.freeze([*everyone, GOOD[0]], thaw_after=600)  # one VM named twice
    thawed = await engine.thaw(GOOD)
    trimmed = await engine.fstrim(everyone)
    ran = await engine.exec(GOOD, ["/bin/echo", "hello"])
    assert [r.ok for r in frozen] == [True, True, True, False]
    assert all(r.ok for r in thawed + ran) and [r.ok for r in trimmed] == [True] * 3 + [False]

    log = records(engine)
    per_action = Counter((r["action"], r["vm"]) for r in log)
    expected = (
        [("freeze", vm) for vm in everyone]
        + [("thaw", vm) for vm in GOOD]
        + [("fstrim", vm) for vm in everyone]
        + [("exec", vm) for vm in GOOD]
    )
    assert per_action == Counter(expected), log
    outcome = {(r["action"], r["vm"]): (r["ok"], r["error"]) for r in log}
    assert outcome[("freeze", GOOD[0])] == (True, None)
    assert outcome[("freeze", BROKEN)] == (False, frozen[3].error)
    assert "frozen" in (frozen[3].error or "")  # the failure says why
    assert all(r["user"] and r["time"] and r["elapsed_ms"] >= 0 for r in log)
    freeze_args = next(r["arguments"] for r in log if r["action"] == "freeze")
    assert freeze_args == {"command": "guest-fsfreeze-freeze", "arguments": None, "thaw_after": 600}


async def test_a_password_set_through_the_engine_never_reaches_the_log(
    engine: FleetEngine,
) -> None:
    secret = "hunter2-S3cr3t"
    encoded = base64.b64encode(secret.encode()).decode()
    result = await engine.agent_command(
        GOOD[0],
        "guest-set-user-password",
        {"username": "root", "password": encoded, "crypted": False},
    )
    assert result.ok, result.error
    assert engine.audit is not None
    text = engine.audit.path.read_text()
    assert secret not in text and encoded not in text
    (record,) = records(engine)
    assert record["arguments"] == {"username": "root", "password": "***", "crypted": "***"}


def test_secrets_nested_anywhere_are_masked(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    arguments = {
        "username": "root",
        "password": "top-level-secret",
        "users": [
            {"name": "a", "password": "in-a-list", "crypted": True},
            {"deeper": {"passwd": "in-a-dict", "secret": "and-another"}},
        ],
    }
    log.record("agent guest-x", "sim/vm0", arguments, True, None, 1.0)
    text = log.path.read_text()
    for leaked in ("top-level-secret", "in-a-list", "in-a-dict", "and-another"):
        assert leaked not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["arguments"] == {
        "username": "root",
        "password": "***",
        "users": [
            {"name": "a", "password": "***", "crypted": "***"},
            {"deeper": {"passwd": "***", "secret": "***"}},
        ],
    }


def test_payloads_are_recorded_as_their_length(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    payload = base64.b64encode(b"the whole file, which is not the log's business").decode()
    stdin = base64.b64encode(b"rows for stdin").decode()
    log.record(
        "agent guest-file-write", "sim/vm0", {"handle": 7, "buf-b64": payload}, True, None, 1
    )
    log.record(
        "agent guest-exec", "sim/vm0", {"path": "/bin/cat", "input-data": stdin}, True, None, 1
    )
    text = log.path.read_text()
    assert payload not in text and stdin not in text
    write, run = (json.loads(line)["arguments"] for line in text.splitlines())
    assert write == {"handle": 7, "buf-b64": f"<{len(payload)} base64 chars>"}
    assert run == {"path": "/bin/cat", "input-data": f"<{len(stdin)} base64 chars>"}


async def test_a_file_write_through_the_engine_is_logged_by_length(engine: FleetEngine) -> None:
    handle = await engine.agent_command(GOOD[0], "guest-file-open", {"path": "/tmp/x", "mode": "w"})
    assert handle.ok, handle.error
    payload = base64.b64encode(b"operator data " * 10).decode()
    written = await engine.agent_command(
        GOOD[0], "guest-file-write", {"handle": handle.value, "buf-b64": payload}
    )
    assert written.ok, written.error
    assert engine.audit is not None and payload not in engine.audit.path.read_text()
    record = records(engine)[-1]
    assert record["action"] == "agent guest-file-write"
    assert record["arguments"] == {
        "handle": handle.value,
        "buf-b64": f"<{len(payload)} base64 chars>",
    }


async def test_an_unwritable_log_is_reported_and_the_action_still_succeeds(
    tmp_path: Path, fleet: SimFleet
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log's directory should be\n")
    hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=1.0)
    audit = AuditLog(blocker / "qgadash" / "audit.jsonl")
    engine = FleetEngine(load_config(hosts), audit=audit)
    try:
        await engine.poll_once()
        frozen = await engine.freeze(GOOD, thaw_after=600)
        thawed = await engine.thaw(GOOD)
    finally:
        await engine.stop()
    assert all(r.ok for r in frozen + thawed), frozen + thawed
    assert not any(fleet.agent(vm.split("/")[1]).frozen for vm in GOOD)
    assert audit.failed is not None
    assert "cannot write the audit log" in audit.failed and str(audit.path) in audit.failed
