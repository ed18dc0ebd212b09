"""`status` polls what is selected and nothing else, and names hypervisors it could not
reach (real sshd with a wrong known_hosts) in the table and the JSON, with exit 1."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.sim import Fault, SimFleet, SimVm, make_profile
from qgadash.sim.agent import GuestAgent
from tests.integration.sshd import SshServer, generate_key

REPO = Path(__file__).resolve().parents[2]


async def run_cli(hosts: Path, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qgadash",
        "--hosts",
        str(hosts),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[SimFleet]:
    vms = [
        SimVm(f"vm{i}", make_profile(i), Fault.SILENT if i == 3 else Fault.NONE) for i in range(4)
    ]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        yield sim


async def test_status_match_polls_only_the_selection(
    tmp_path: Path, fleet: SimFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacted: list[int] = []
    connect = GuestAgent.connect

    def counting(self: GuestAgent) -> object:
        contacted.append(id(self))
        return connect(self)

    monkeypatch.setattr(GuestAgent, "connect", counting)
    silent = id(fleet.agent("vm3"))
    hosts = fleet.write_hosts_toml(tmp_path / "hosts.toml", timeout=2.0, session="per-poll")

    code, out, err = await run_cli(hosts, tmp_path, "status", "--match", "sim/vm0", "--json")
    assert code == 0, err
    assert [v["id"] for v in json.loads(out)["vms"]] == ["sim/vm0"]
    assert silent not in contacted  # the silent agent elsewhere is never asked
    assert contacted.count(id(fleet.agent("vm0"))) >= 1
    assert id(fleet.agent("vm1")) not in contacted

    # The whole fleet does reach it (the counting above sees the silent agent).
    code, out, _ = await run_cli(hosts, tmp_path, "status")
    assert code == 1 and silent in contacted
    assert "sim/vm3" in out and "timeout" in out


def write_ssh_hosts(path: Path, sshd: SshServer, known_hosts: Path) -> Path:
    path.write_text(
        "[settings]\ntimeout = 3.0\n\n"
        "[[hypervisor]]\n"
        'name = "hv1"\n'
        f'ssh = "{sshd.spec()}"\n'
        f'identity = "{sshd.client_key}"\n'
        f'known_hosts = "{known_hosts}"\n'
        'agents = ["/run/qga/*.sock"]\n'
    )
    return path


async def test_status_names_a_hypervisor_whose_host_key_is_wrong_and_exits_1(
    sshd: SshServer, tmp_path: Path
) -> None:
    other = generate_key(tmp_path / "other_host_key").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    hosts = write_ssh_hosts(tmp_path / "hosts.toml", sshd, known)

    code, out, err = await run_cli(hosts, tmp_path, "status", "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["vms"] == []
    [hv] = doc["hypervisors"]
    assert hv["name"] == "hv1" and hv["state"] == "host-key-rejected"
    assert f"does not match {known} line 1" in hv["error"]

    code, out, err = await run_cli(hosts, tmp_path, "status")
    assert code == 1, err
    row = next(line for line in out.splitlines() if line.startswith("hv1/*"))
    assert "host-key-rejected" in row and str(known) in row
    assert "no VM matches" not in err

    # An action on that selection fails (1), naming the hypervisor and why; not a usage error.
    code, _, err = await run_cli(hosts, tmp_path, "thaw", "--yes", "--match", "hv1/*")
    assert code == 1
    assert "hypervisor hv1: host-key-rejected" in err and str(known) in err
