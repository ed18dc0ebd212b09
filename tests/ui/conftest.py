"""Fixtures for dashboard tests: a fixed clock, a fake engine on a mixed fleet, the app."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import pytest
from textual.app import App
from textual.pilot import Pilot

from qgadash.fleet.config import Settings
from qgadash.fleet.model import VmSnapshot
from qgadash.fleet.store import FleetStore
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
