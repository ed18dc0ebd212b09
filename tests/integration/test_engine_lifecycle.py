"""The engine as an async context manager, and process tuning left to entry points."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import FreezeState
from qgadash.sim import SimFleet


def _engine(fleet: SimFleet, directory: Path, **kwargs: object) -> FleetEngine:
    directory.mkdir(parents=True, exist_ok=True)
    hosts = directory / "hosts.toml"
    fleet.write_hosts_toml(hosts, hypervisor="sim", timeout=3.0, poll_interval=0.5)
    return FleetEngine(load_config(hosts), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """Whatever a test's engine does to the collector is undone for the next test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_leaving_the_block_by_an_exception_thaws_and_stops(tmp_path: Path) -> None:
    async with SimFleet.healthy(tmp_path / "sim", 2) as fleet:
        engine = _engine(fleet, tmp_path)
        vm = f"sim/{fleet.vms[0].name}"
        with pytest.raises(RuntimeError, match="operator's script failed"):
            async with engine as running:
                assert running is engine
                await engine.poll_vm(vm)
                await engine.freeze([vm])
                assert engine.frozen_by_us() == [vm]
                raise RuntimeError("operator's script failed")
        assert engine.frozen_by_us() == []
        async with _engine(fleet, tmp_path / "after") as after:  # what the guest says
            await after.poll_vm(vm)
            snapshot = after.store.get(vm)
            assert snapshot is not None and snapshot.freeze is FreezeState.THAWED


async def test_the_engine_leaves_the_collector_alone_unless_its_entry_point_asks(
    tmp_path: Path, gc_restored: None
) -> None:
    calls: list[int] = []
    async with SimFleet.healthy(tmp_path / "sim", 2) as fleet:
        threshold = gc.get_threshold()
        async with _engine(fleet, tmp_path / "a"):
            pass
        assert gc.get_threshold() == threshold  # a test process keeps Python's defaults

        async with _engine(fleet, tmp_path / "b", after_discovery=lambda: calls.append(1)) as e:
            assert len(e.store) == 2  # called once the inventory exists
    assert calls == [1]


async def test_an_internal_error_in_a_poll_is_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a poll costs that poll, and leaves its traceback in the log (--log-file)."""
    async with SimFleet.healthy(tmp_path / "sim", 1) as fleet:
        engine = _engine(fleet, tmp_path)
        vm = f"sim/{fleet.vms[0].name}"

        async def broken_poll(vm_id: str) -> None:
            raise KeyError("a bug in the poller")

        engine.poll_vm = broken_poll  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="qgadash.fleet.engine"):
            async with engine, asyncio.timeout(30):
                while not ((s := engine.store.get(vm)) and s.error and "internal" in s.error):
                    await asyncio.sleep(0.05)
    (record,) = [r for r in caplog.records if "internal error in a poll" in r.getMessage()]
    assert vm in record.getMessage()
    assert record.exc_info is not None and "a bug in the poller" in str(record.exc_info[1])


async def test_how_an_old_agent_was_adapted_to_is_the_vms_note(tmp_path: Path) -> None:
    """qemu-ga 1.2 refuses request ids: the channel notes it, and the store (the Agent tab,
    `status --json`'s agent.note) says so for that VM only."""
    from qgadash.sim import Era, SimVm, era_profile

    vms = [SimVm("old", era_profile(Era.QGA_1_2, 0)), SimVm("new", era_profile(Era.QGA_7_2, 1))]
    async with SimFleet(tmp_path / "sim", vms) as fleet, _engine(fleet, tmp_path) as engine:
        await engine.poll_vm("sim/old")
        await engine.poll_vm("sim/new")
        note = engine.store.note("sim/old")
        assert note is not None and "request ids" in note, note
        assert engine.store.note("sim/new") is None
        assert engine.store.notes() == {"sim/old": note}
