"""Every guest agent since the first (issue 12): a fleet mixing simulated agents of every
era, and the real qemu-ga 7.2, all `ok` with what each can report; freeze and thaw with
a deadline on each; fstrim, shutdown and suspend where the era has them.

The eras answer as the real releases did (see qgadash.sim.agent): qemu-ga 1.0 (no
guest-sync-delimited, guest-info lists no commands), 1.2 and 2.5 (request ids refused),
7.2 and 10.x (ids echoed), Windows (VSS, exec disabled by policy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent.errors import AgentUnsupported
from qgadash.agent.session import IdMode
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, FreezeState
from qgadash.sim import Era, SimFleet, SimVm, era_profile
from tests.integration.realagent import RealAgent

TIMEOUT = 2.0
NAMES = {
    Era.QGA_1_0: "qga-1-0",
    Era.QGA_1_2: "qga-1-2",
    Era.QGA_2_5: "qga-2-5",
    Era.QGA_7_2: "qga-7-2",
    Era.QGA_10: "qga-10",
    Era.WINDOWS: "windows",
}


def vm_id(era: Era) -> str:
    return f"sim/{NAMES[era]}"


@pytest.fixture
async def eras(tmp_path: Path) -> AsyncIterator[SimFleet]:
    vms = [SimVm(NAMES[era], era_profile(era, i)) for i, era in enumerate(Era)]
    async with SimFleet(tmp_path / "sim", vms) as fleet:
        yield fleet


def engine_for(fleet: SimFleet, directory: Path, session: str) -> FleetEngine:
    hosts = fleet.write_hosts_toml(
        directory / "hosts.toml", timeout=TIMEOUT, poll_interval=1.0, session=session
    )
    return FleetEngine(load_config(hosts))


# -- polling ------------------------------------------------------------------------------


@pytest.mark.parametrize("session", ["held", "per-poll"])
async def test_every_era_is_ok_with_the_facts_it_has(
    tmp_path: Path, eras: SimFleet, session: str
) -> None:
    """Before: every agent that refuses request ids (1.2, 2.5) or lacks
    guest-sync-delimited (1.0) showed `timeout` on every poll."""
    engine = engine_for(eras, tmp_path, session)
    try:
        for _ in range(2):  # the first poll learns each agent; the second uses what it learnt
            started = time.monotonic()
            await engine.poll_once()
            assert time.monotonic() - started < TIMEOUT
            snaps = {s.ref.name: s for s in engine.store.snapshots()}
            bad = {n: (s.agent, s.error) for n, s in snaps.items() if s.agent is not AgentState.OK}
            assert not bad
            assert all(s.freeze is FreezeState.THAWED for s in snaps.values())
        f = {era: engine.store.get(vm_id(era)).facts for era in Era}  # type: ignore[union-attr]
        assert f[Era.QGA_1_0].info is not None and f[Era.QGA_1_0].info.listed is False
        assert f[Era.QGA_1_0].interfaces is None and f[Era.QGA_1_0].filesystems is None
        assert f[Era.QGA_1_2].interfaces and all(i.stats is None for i in f[Era.QGA_1_2].interfaces)
        assert f[Era.QGA_1_2].filesystems is None and f[Era.QGA_1_2].hostname is None
        assert f[Era.QGA_2_5].filesystems and f[Era.QGA_2_5].filesystems[0].used_bytes is None
        assert f[Era.QGA_2_5].os is None and f[Era.QGA_2_5].time_drift_s is not None
        assert f[Era.QGA_7_2].hostname and f[Era.QGA_7_2].os and f[Era.QGA_7_2].load is None
        assert f[Era.QGA_10].load is not None
        assert f[Era.WINDOWS].os is not None and f[Era.WINDOWS].os.id == "mswindows"
        # What each agent taught its endpoint: ids only where they are echoed.
        ids = {era: engine.session(vm_id(era)).endpoint.traits.ids for era in Era}  # type: ignore[union-attr]
        assert ids[Era.QGA_1_0] is ids[Era.QGA_1_2] is ids[Era.QGA_2_5] is IdMode.REFUSED
        assert ids[Era.QGA_7_2] is ids[Era.QGA_10] is ids[Era.WINDOWS] is IdMode.ECHOED
    finally:
        await engine.stop()


async def test_the_agent_tab_facts_say_the_era_and_what_it_cannot_report(
    tmp_path: Path, eras: SimFleet
) -> None:
    engine = engine_for(eras, tmp_path, "held")
    try:
        await engine.poll_once()
        old = engine.store.get(vm_id(Era.QGA_1_2)).facts.info  # type: ignore[union-attr]
        assert old is not None and old.era == "qemu-ga 1.1-2.4 (2012-2015)"
        assert {"OS", "host name", "filesystems and disk use", "load"} <= set(old.cannot_report)
        new = engine.store.get(vm_id(Era.QGA_10)).facts.info  # type: ignore[union-attr]
        assert new is not None and new.cannot_report == ()
    finally:
        await engine.stop()


# -- actions ------------------------------------------------------------------------------


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_freeze_and_thaw_by_deadline_on_every_era(tmp_path: Path, eras: SimFleet) -> None:
    engine = engine_for(eras, tmp_path, "per-poll")
    try:
        await engine.poll_once()
        ids = [vm_id(era) for era in Era]
        # Under 10 s: VSS holds a Windows freeze that long at most.
        results = await engine.freeze(ids, thaw_after=1.0)
        assert all(r.ok for r in results), results
        assert all(eras.agent(NAMES[era]).frozen for era in Era)
        await wait_for(lambda: not any(eras.agent(NAMES[era]).frozen for era in Era))
        assert engine.frozen_by_us() == []
        await engine.poll_once()
        assert all(s.freeze is FreezeState.THAWED for s in engine.store.snapshots())
    finally:
        await engine.stop()


async def test_fstrim_where_the_era_has_it(tmp_path: Path, eras: SimFleet) -> None:
    engine = engine_for(eras, tmp_path, "held")
    try:
        await engine.poll_once()
        have = [Era.QGA_1_2, Era.QGA_2_5, Era.QGA_7_2, Era.QGA_10]
        results = {r.vm_id: r for r in await engine.fstrim([vm_id(e) for e in have])}
        assert all(r.ok for r in results.values()), results
        assert results[vm_id(Era.QGA_1_2)].value == []  # 1.2 reported nothing per path
        assert results[vm_id(Era.QGA_7_2)].value and results[vm_id(Era.QGA_7_2)].value[0]["path"]
        plan = engine.plan(engine_action("FSTRIM"), [vm_id(Era.QGA_1_0), vm_id(Era.WINDOWS)])
        assert dict(plan.skipped)[vm_id(Era.QGA_1_0)] == "this agent has no guest-fstrim"
    finally:
        await engine.stop()


def engine_action(name: str) -> Any:
    from qgadash.fleet.actions import Action

    return Action[name]


async def test_suspend_where_the_era_has_it_and_not_sent_where_not(
    tmp_path: Path, eras: SimFleet
) -> None:
    engine = engine_for(eras, tmp_path, "held")
    try:
        await engine.poll_once()
        results = {r.vm_id: r for r in await engine.suspend([vm_id(e) for e in Era], kind="ram")}
        for era in Era:
            if era is Era.QGA_1_0:
                assert results[vm_id(era)].ok is False
                assert "has no guest-suspend-ram" in (results[vm_id(era)].error or "")
            else:
                assert results[vm_id(era)].ok, (era, results[vm_id(era)])
    finally:
        await engine.stop()


async def test_shutdown_on_every_era(tmp_path: Path, eras: SimFleet) -> None:
    engine = engine_for(eras, tmp_path, "per-poll")
    try:
        await engine.poll_once()
        results = await engine.shutdown([vm_id(e) for e in Era], mode="halt")
        assert all(r.ok for r in results), results
        assert all(eras.agent(NAMES[era]).powered_off for era in Era)
    finally:
        await engine.stop()


async def test_a_command_the_agent_lacks_is_refused_unsent_even_before_any_poll(
    tmp_path: Path, eras: SimFleet
) -> None:
    engine = engine_for(eras, tmp_path, "per-poll")
    try:
        await engine.discover()  # found, never polled: no guest-info known yet
        with pytest.raises(AgentUnsupported, match=r"qemu-ga 2\.5\.0"):
            await engine.with_agent(
                vm_id(Era.QGA_2_5),
                lambda c: c.call(
                    "guest-ssh-add-authorized-keys", {"username": "x", "keys": []}, timeout=TIMEOUT
                ),
            )
    finally:
        await engine.stop()


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "fleet"
    args = [sys.executable, "-m", "qgadash.sim", "--dir", str(directory), "--count", "6"]
    args += ["--timeout", str(TIMEOUT), "--session", "per-poll"]
    for era in Era:
        args += ["--era", f"{era.value}=1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert "ready" in proc.stdout.readline()
        yield directory / "hosts.toml"
    finally:
        proc.terminate()
        proc.wait(10)


def cli(
    hosts: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qgadash", "--hosts", str(hosts), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_status_json_over_every_era(sim_process: Path) -> None:
    proc = cli(sim_process, "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vms = {vm["agent"]["version"]: vm for vm in json.loads(proc.stdout)["vms"]}
    assert all(vm["agent"]["state"] == "ok" for vm in vms.values()), vms
    assert set(vms) == {"1.0", "1.2.0", "2.5.0", "7.2.22", "10.0.3", "9.2.0"}
    for absent in ("hostname", "os", "filesystems", "interfaces", "timezone"):
        assert vms["1.0"][absent] is None  # not reported: null, never missing
    assert vms["1.2.0"]["interfaces"] and vms["1.2.0"]["filesystems"] is None
    assert vms["2.5.0"]["filesystems"] and vms["2.5.0"]["hostname"] is None
    assert vms["7.2.22"]["hostname"]
    # Before 10.0 no guest-get-load: the load is /proc/loadavg's (Linux), Windows says why.
    for old in ("1.0", "1.2.0", "2.5.0", "7.2.22"):
        assert vms[old]["load"]["source"] == "/proc/loadavg", old
    assert vms["10.0.3"]["load"]["source"] == "guest-get-load"
    assert vms["9.2.0"]["load"] is None
    assert vms["9.2.0"]["load_note"] == "Windows has no load average"


def test_cli_freeze_with_a_deadline_thaws_every_era(sim_process: Path, tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_RUNTIME_DIR=str(tmp_path))
    proc = cli(sim_process, "freeze", "--thaw-after", "1", "--yes", "--json", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = json.loads(cli(sim_process, "status", "--json", env=env).stdout)
    assert {vm["fsfreeze"] for vm in after["vms"]} == {"thawed"}


# -- the real qemu-ga -----------------------------------------------------------------------


@pytest.mark.real_agent
async def test_the_real_qemu_ga_7_2_echoes_ids_and_is_polled_with_them(
    tmp_path: Path, real_agent_factory: Any
) -> None:
    (agent,) = real_agent_factory(1, ["real"])
    assert isinstance(agent, RealAgent)
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        f'[settings]\ntimeout = 2.0\n[[hypervisor]]\nname = "lab"\n'
        f'agents = ["{agent.socket.parent}/*.sock"]\nsession = "per-poll"\n'
    )
    engine = FleetEngine(load_config(hosts))
    try:
        for _ in range(2):
            await engine.poll_once()
            (snap,) = engine.store.snapshots()
            assert snap.agent is AgentState.OK, snap.error
            assert snap.facts.hostname and snap.facts.os and snap.facts.filesystems is not None
        (vm,) = engine.store.ids()
        assert engine.session(vm).endpoint.traits.ids is IdMode.ECHOED  # type: ignore[union-attr]
        assert snap.facts.info is not None and snap.facts.info.era.startswith("qemu-ga 7.")
    finally:
        await engine.stop()


# -- directory listings through each era's guest-exec -------------------------------------


async def test_directory_listings_where_the_era_has_guest_exec(tmp_path: Path) -> None:
    """The product's listing scripts against the simulated guests: Linux's `sh -c` with
    NUL-ended records, Windows's powershell.exe -EncodedCommand (exec allowed here); a
    1.2 agent has no guest-exec and says so."""
    windows = dataclasses.replace(era_profile(Era.WINDOWS, 5), disabled_commands=frozenset())
    vms = [
        SimVm("linux", era_profile(Era.QGA_2_5, 1)),
        SimVm("windows", windows),
        SimVm("old", era_profile(Era.QGA_1_2, 2)),
    ]
    async with SimFleet(tmp_path / "sim", vms) as fleet:
        engine = engine_for(fleet, tmp_path, "per-poll")
        try:
            await engine.poll_once()
            linux = await engine.files.list_dir("sim/linux", "/data")
            assert {e.name for e in linux.entries} >= {"README", "blob.bin", "backups"}
            win = await engine.files.list_dir("sim/windows", "C:\\")
            kinds = {e.name: e.kind for e in win.entries}
            assert kinds["Windows"] == "dir" and kinds["Users"] == "dir"
            assert "guest-exec" in (engine.files.can_list("sim/old") or "")
        finally:
            await engine.stop()
