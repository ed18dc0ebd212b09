"""The engine and the CLI against several real qemu-ga processes (dangerous commands blocked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qgadash.agent.errors import AgentCommandError
from qgadash.fleet.actions import Action
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, FreezeState
from tests.integration.realagent import MakeRealAgents, RealAgent

pytestmark = pytest.mark.real_agent


def hosts_for(tmp: Path, agents: list[RealAgent], extra: str = "") -> Path:
    directory = agents[0].socket.parent
    path = tmp / "hosts.toml"
    path.write_text(
        "[settings]\ntimeout = 2.0\npoll_interval = 1.0\n"
        f'[[hypervisor]]\nname = "lab"\nagents = ["{directory}/*.sock"]\ntags = ["lab"]\n' + extra
    )
    return path


@pytest.fixture
def three_agents(real_agent_factory: MakeRealAgents) -> list[RealAgent]:
    return real_agent_factory(3, ["alpha", "beta", "gamma"])


async def test_engine_reads_every_fact_from_real_agents(
    tmp_path: Path, three_agents: list[RealAgent]
) -> None:
    engine = FleetEngine(load_config(hosts_for(tmp_path, three_agents)))
    try:
        await engine.poll_once()
        snaps = {s.ref.name: s for s in engine.store.snapshots()}
        assert set(snaps) == {"alpha", "beta", "gamma"}
        for snap in snaps.values():
            assert snap.agent is AgentState.OK, snap.error
            facts = snap.facts
            assert facts.info is not None and facts.info.version
            # Capabilities: blocked commands are listed but disabled; others enabled.
            assert facts.info.offers("guest-fsfreeze-freeze")
            assert facts.info.enabled("guest-fsfreeze-freeze") is False
            assert facts.info.enabled("guest-get-osinfo") is True
            assert facts.os is not None and facts.os.kernel_release
            assert facts.hostname
            assert facts.interfaces and any(i.name == "lo" for i in facts.interfaces)
            assert facts.filesystems is not None
            assert snap.freeze is FreezeState.THAWED
            assert snap.latency_ms is not None and snap.latency_ms < 2000
            assert snap.ref.tags == ("lab",)
    finally:
        await engine.stop()


async def test_file_read_of_a_known_file(tmp_path: Path, three_agents: list[RealAgent]) -> None:
    known = tmp_path / "known.bin"
    payload = bytes(range(256)) * 5000  # 1.28 MB, binary, several chunks
    known.write_bytes(payload)
    engine = FleetEngine(load_config(hosts_for(tmp_path, three_agents)))
    try:
        await engine.poll_once()
        vm = "lab/alpha"
        head = await engine.files.read(vm, str(known), max_bytes=1000)
        assert head.data == payload[:1000] and head.size == len(payload) and not head.eof
        target = tmp_path / "copy.bin"
        assert await engine.files.download(vm, str(known), target) == len(payload)
        assert target.read_bytes() == payload
        tail = await engine.files.tail(vm, str(known), max_bytes=100)
        assert tail.data == payload[-100:]
    finally:
        await engine.stop()


async def test_exec_captures_output_and_listing_works(
    tmp_path: Path, three_agents: list[RealAgent]
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file one.txt").write_text("x" * 10)
    (tmp_path / "d" / "sub").mkdir()
    engine = FleetEngine(load_config(hosts_for(tmp_path, three_agents)))
    try:
        await engine.poll_once()
        results = await engine.exec(
            ["lab/beta"], ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        (r,) = results
        assert r.ok is True
        assert (
            r.value["stdout"] == "out\n"
            and r.value["stderr"] == "err\n"
            and r.value["exitcode"] == 3
        )
        listing = await engine.files.list_dir("lab/beta", str(tmp_path / "d"))
        entries = {e.name: e for e in listing.entries}
        assert entries["sub"].kind == "dir"
        assert entries["file one.txt"].kind == "file" and entries["file one.txt"].size == 10
    finally:
        await engine.stop()


async def test_disabled_command_is_refused_with_the_agents_words(
    tmp_path: Path, three_agents: list[RealAgent]
) -> None:
    engine = FleetEngine(load_config(hosts_for(tmp_path, three_agents)))
    try:
        await engine.poll_once()
        plan = engine.plan(Action.FREEZE, ["lab/alpha"])
        assert plan.eligible == () and "disabled" in plan.skipped[0][1]
        # Sent anyway (raw), the agent's own error comes back with its class.
        with pytest.raises(AgentCommandError) as info:
            await engine.with_agent(
                "lab/alpha", lambda c: c.call("guest-fsfreeze-freeze", timeout=2.0)
            )
        assert info.value.disabled and info.value.error_class == "CommandNotFound"
    finally:
        await engine.stop()


async def test_per_poll_sessions_leave_the_socket_free_for_others(
    tmp_path: Path, three_agents: list[RealAgent]
) -> None:
    from tests.integration.realagent import agent_answers

    engine = FleetEngine(load_config(hosts_for(tmp_path, three_agents)))
    try:
        await engine.poll_once()
        await engine.poll_once()
        # Another tool gets an answer right away: we do not hold the socket between polls.
        assert agent_answers(three_agents[0].socket, timeout=2.0)
    finally:
        await engine.stop()


def test_status_json_over_real_agents(tmp_path: Path, three_agents: list[RealAgent]) -> None:
    hosts = hosts_for(
        tmp_path, three_agents, f'[[vm]]\nname = "ghost"\nagent = "{tmp_path}/none.sock"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(hosts), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(proc.stdout)
    by_id = {vm["id"]: vm for vm in doc["vms"]}
    assert set(by_id) == {"lab/alpha", "lab/beta", "lab/gamma", "local/ghost"}
    assert by_id["lab/alpha"]["agent"]["state"] == "ok"
    assert by_id["lab/alpha"]["fsfreeze"] == "thawed"
    assert by_id["lab/alpha"]["os"]["kernel"]
    assert by_id["local/ghost"]["agent"]["state"] == "unreachable"
    assert by_id["local/ghost"]["hostname"] is None  # not reported: null, never missing
    assert {h["name"]: h["state"] for h in doc["hypervisors"]}["lab"] == "local"
    assert proc.returncode == 1  # one VM did not answer

    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(hosts), "status", "--match", "lab/*"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lab/gamma" in proc.stdout and "ghost" not in proc.stdout


def test_destructive_cli_command_needs_yes_without_a_terminal(
    tmp_path: Path, three_agents: list[RealAgent]
) -> None:
    hosts = hosts_for(tmp_path, three_agents)
    proc = subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(hosts), "exec", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "--yes" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qgadash",
            "--hosts",
            str(hosts),
            "--read-only",
            "exec",
            "--yes",
            "--",
            "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "read-only" in proc.stderr
