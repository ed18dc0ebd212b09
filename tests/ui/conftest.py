"""Fixtures for dashboard tests: the real engine on simulated guests (`make_sim_rig`);
for what no engine can show (a fixed clock, every state at once), a fake engine on a
mixed fleet (fakes.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
from textual.app import App
from textual.pilot import Pilot

from qgadash.fleet.config import Settings, load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState, VmSnapshot
from qgadash.fleet.store import FleetStore
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.sim.agent import GuestAgent
from qgadash.ui.app import QgadashApp

from .fakes import FakeClock, FakeEngine, hostile_snapshot, mixed_fleet

SIZE = (160, 50)


def snapshot_of(store: FleetStore, vm_id: str) -> VmSnapshot:
    """The store's snapshot of a VM the test knows is there."""
    snap = store.get(vm_id)
    assert snap is not None, f"{vm_id} is not in the store"
    return snap


class MakeEngine(Protocol):
    """The `make_engine` fixture: a fake engine on `mixed_fleet(n)`; keyword arguments are
    `Settings` fields."""

    def __call__(self, n: int = 24, *, hostile: bool = False, **settings: Any) -> FakeEngine: ...


class MakeApp(Protocol):
    """The `make_app` fixture: the dashboard on an engine, with the test's clock."""

    def __call__(self, engine: FakeEngine, **kwargs: Any) -> QgadashApp: ...


class SnapCompare(Protocol):
    """pytest-textual-snapshot's `snap_compare` fixture, as it is called (the plugin
    declares a narrower return type than the function it returns)."""

    def __call__(
        self,
        app: str | Path | App[Any],
        press: Iterable[str] = (),
        terminal_size: tuple[int, int] = (80, 24),
        run_before: Callable[[Pilot[Any]], Awaitable[None] | None] | None = None,
    ) -> bool: ...


@pytest.fixture(autouse=True)
def _no_user_themes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User themes and settings of the machine running the tests never leak in."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_engine(clock: FakeClock) -> MakeEngine:
    def make(n: int = 24, *, hostile: bool = False, **settings: Any) -> FakeEngine:
        snaps, hvs = mixed_fleet(n)
        if hostile:
            snaps.append(hostile_snapshot())
        return FakeEngine(
            snaps, hvs, settings=dataclasses.replace(Settings(), **settings), clock=clock
        )

    return make


@pytest.fixture
def engine(make_engine: MakeEngine) -> FakeEngine:
    return make_engine()


@pytest.fixture
def make_app(clock: FakeClock) -> MakeApp:
    def make(engine: FakeEngine, **kwargs: Any) -> QgadashApp:
        return QgadashApp(engine, config_label="hosts.toml", clock=clock, **kwargs)

    return make


# -- the real engine on simulated guests --------------------------------------------------


@dataclasses.dataclass
class SimRig:
    """Simulated guests (qgadash.sim, over unix sockets) and the real engine polling them."""

    fleet: SimFleet
    engine: FleetEngine

    def agent(self, vm_id: str) -> GuestAgent:
        """The simulated agent behind `sim/<name>` (to change its state in a test)."""
        return self.fleet.agent(vm_id.split("/", 1)[1])

    def answering(self, *vm_ids: str) -> bool:
        """Every VM named (all when none is) has been polled and answered."""
        names = vm_ids or tuple(f"sim/{vm.name}" for vm in self.fleet.vms)
        snaps = [self.engine.store.get(v) for v in names]
        return all(s is not None and s.agent is AgentState.OK for s in snaps)


def linux_vms(*names: str, disabled: frozenset[str] = frozenset()) -> list[SimVm]:
    """Simulated Linux guests; `disabled`: commands their agents' policy turns off."""
    profiles = [p for p in map(make_profile, range(20)) if not p.windows]
    return [
        SimVm(name, dataclasses.replace(profile, disabled_commands=disabled))
        for name, profile in zip(names, profiles, strict=False)
    ]


class MakeSimRig(Protocol):
    """The `make_sim_rig` fixture: guests from `vms` under hypervisor `sim`, each VM
    `sim/<name>`; keyword arguments are `Settings` fields."""

    async def __call__(self, vms: Sequence[SimVm], **settings: Any) -> SimRig: ...


@pytest.fixture
async def make_sim_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeSimRig]:
    # Audit logs and hold journals of these tests never reach ~/.local/state.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    made: list[SimRig] = []

    async def make(vms: Sequence[SimVm], **settings: Any) -> SimRig:
        fleet = SimFleet(tmp_path / f"sim{len(made)}", list(vms))
        await fleet.start()
        hosts = fleet.write_hosts_toml(
            # A request timeout a loaded machine keeps: 0.5 s failed requests under CI load,
            # 3 s a listing's guest-exec at load 12 on 2 cores. No test here waits on one.
            tmp_path / f"hosts{len(made)}.toml",
            poll_interval=0.3,
            timeout=5.0,
        )
        config = load_config(hosts)
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, **settings)
        )
        rig = SimRig(fleet, FleetEngine(config))
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.engine.stop()
        await rig.fleet.stop()
