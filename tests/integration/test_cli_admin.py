"""The administration verbs from the command line, against simulated agents: time-sync,
password (a hash on stdin; never an argument, never in the audit), ssh-keys with the
diff before the change, vcpus; per-VM rows, skipped agents, honest exit codes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.sim import SimFleet, SimVm, make_profile

REPO = Path(__file__).resolve().parents[2]
HASH = (
    "$6$saltsalt$Xq3ZqGxw0Hn2h1lJ0b2N8mWbQ9Jx1c7Zk5yQ0t3nY6u8pQ2vR4sT6w"
    "U8xY0zA2bC4dE6fG8hJ0kL2mN4pQ6rS"
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1iLiVeT17 leaked@laptop"


async def run_cli(
    hosts: Path, tmp_path: Path, *args: str, stdin: bytes = b""
) -> tuple[int, str, str]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qgadash",
        "--hosts",
        str(hosts),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def audit_text(tmp_path: Path) -> str:
    path = tmp_path / "state" / "qgadash" / "audit.jsonl"
    return path.read_text() if path.exists() else ""


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Path]:
    profiles = [make_profile(j) for j in range(40)]
    linux = [dataclasses.replace(p, vcpus=4) for p in profiles if not p.windows][:3]
    vms = [
        SimVm("vm0", linux[0]),
        SimVm("vm1", linux[1]),
        SimVm("old", dataclasses.replace(linux[2], agent_version="5.1.0")),
    ]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        yield sim.write_hosts_toml(tmp_path / "hosts.toml", timeout=2.0)


async def test_time_sync_prints_drift_per_vm(hosts: Path, tmp_path: Path) -> None:
    code, out, err = await run_cli(hosts, tmp_path, "time-sync", "--match", "sim/vm*", "--yes")
    assert code == 0, err
    assert (out.count("drift") == 2 and "-> +0.0" in out) or "-> -0.0" in out, out
    code, _, err = await run_cli(hosts, tmp_path, "time-sync", "--match", "sim/vm0")
    assert code == 2 and "add --yes" in err  # no terminal, no answer
    code, _, err = await run_cli(hosts, tmp_path, "--read-only", "time-sync", "--yes")
    assert code == 2 and "read-only" in err


async def test_password_from_stdin_hash_never_logged(hosts: Path, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        hosts,
        tmp_path,
        "password",
        "--match",
        "sim/vm0",
        "--user",
        "root",
        "--crypted",
        "--yes",
        stdin=(HASH + "\n").encode(),
    )
    assert code == 0, err + out
    assert "sim/vm0" in out and "ok" in out
    audit = audit_text(tmp_path)
    assert '"action": "password"' in audit and '"username": "root"' in audit
    assert HASH not in audit and "saltsalt" not in audit
    assert HASH not in out + err
    # Nor in the debug log.
    log = tmp_path / "debug.log"
    code, _, err = await run_cli(
        hosts,
        tmp_path,
        "--log-file",
        str(log),
        "--debug",
        "password",
        "--match",
        "sim/vm1",
        "--user",
        "root",
        "--crypted",
        "--yes",
        stdin=(HASH + "\n").encode(),
    )
    assert code == 0, err
    assert "password" in log.read_text() and HASH not in log.read_text()
    assert "saltsalt" not in log.read_text()
    # Without a terminal and without --crypted there is nothing to read a password from.
    code, _, err = await run_cli(
        hosts, tmp_path, "password", "--match", "sim/vm0", "--user", "root", "--yes"
    )
    assert code == 2 and "never on the command line" in err
    # And no option takes one.
    code, _, err = await run_cli(
        hosts, tmp_path, "password", "--user", "root", "--password", "x", "--yes"
    )
    assert code == 2 and "unrecognized arguments" in err


async def test_ssh_keys_diff_then_change_and_old_agents_skipped(
    hosts: Path, tmp_path: Path
) -> None:
    keyfile = tmp_path / "leaked.pub"
    keyfile.write_text(f"# the leaked key\n\n{KEY}\n")
    code, out, err = await run_cli(
        hosts, tmp_path, "ssh-keys", "add", str(keyfile), "--user", "root", "--yes"
    )
    assert code == 1, err  # the 5.1 agent has no SSH key commands: skipped, not ok
    assert f"+ {KEY}" in out
    assert "sim/old" in out and "skipped: this agent has no guest-ssh-add-authorized-keys" in out
    code, out, err = await run_cli(
        hosts, tmp_path, "ssh-keys", "list", "--match", "sim/vm*", "--user", "root", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert [r["value"] for r in doc["results"]] == [[KEY], [KEY]]
    code, out, err = await run_cli(
        hosts,
        tmp_path,
        "ssh-keys",
        "remove",
        "-",
        "--match",
        "sim/vm0",
        "--user",
        "root",
        "--yes",
        stdin=KEY.encode(),
    )
    assert code == 0, err
    assert f"- {KEY}" in out and "1 removed" in out
    code, out, _ = await run_cli(
        hosts, tmp_path, "ssh-keys", "list", "--match", "sim/vm*", "--user", "root"
    )
    assert "sim/vm0 (0 keys)" in out and "sim/vm1 (1 key)" in out


async def test_vcpus_shown_and_set(hosts: Path, tmp_path: Path) -> None:
    code, out, err = await run_cli(
        hosts, tmp_path, "vcpus", "--match", "sim/vm0", "--online", "2", "--yes"
    )
    assert code == 0, err
    assert "2 of 4 online (offline: 2,3)" in out
    code, out, err = await run_cli(hosts, tmp_path, "vcpus", "--match", "sim/vm*")
    assert code == 0, err  # reading needs no confirmation
    assert "2 of 4 online" in out and "4 of 4 online" in out
    code, out, _ = await run_cli(hosts, tmp_path, "--read-only", "vcpus", "--match", "sim/vm0")
    assert code == 0, out
