"""Fixtures for dashboard tests: a fixed clock, a fake engine on a mixed fleet, the app."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from qgadash.fleet.config import Settings
from qgadash.ui.app import QgadashApp

from .fakes import FakeClock, FakeEngine, hostile_snapshot, mixed_fleet

SIZE = (160, 50)


@pytest.fixture(autouse=True)
def _no_user_themes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User themes and settings of the machine running the tests never leak in."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_engine(clock: FakeClock) -> Callable[..., FakeEngine]:
    def make(n: int = 24, *, hostile: bool = False, **settings: object) -> FakeEngine:
        snaps, hvs = mixed_fleet(n)
        if hostile:
            snaps.append(hostile_snapshot())
        return FakeEngine(
            snaps, hvs, settings=dataclasses.replace(Settings(), **settings), clock=clock
        )

    return make


@pytest.fixture
def engine(make_engine: Callable[..., FakeEngine]) -> FakeEngine:
    return make_engine()


@pytest.fixture
def make_app(clock: FakeClock) -> Callable[..., QgadashApp]:
    def make(engine: FakeEngine, **kwargs: object) -> QgadashApp:
        return QgadashApp(engine, config_label="hosts.toml", clock=clock, **kwargs)  # type: ignore[arg-type]

    return make
