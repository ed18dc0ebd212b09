"""pytest plugin with real-guest fixtures.

Register from ``tests/conftest.py`` with ``pytest_plugins = ["tests.guests.fixtures"]``.

- ``guest_image`` (session): the cached kernel + initramfs (built on first use).
- ``guest_factory`` (function): ``guest_factory(**GuestSpec fields) -> Guest`` and
  ``guest_factory.many([GuestSpec, ...]) -> list[Guest]``; all stopped after the test.
- ``shared_guests``: ``[g1, g2]``, two agent guests booted once per session, for tests
  that leave them running, unfrozen and with their agent up; a guest whose agent no
  longer answers is booted afresh before the next test (``SharedGuests``).

Missing QEMU/packages skip the test, or fail it when ``CI=true`` (a CI machine that
silently skips every real-guest test would prove nothing).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .agent import AgentTimeout, open_agent
from .image import GuestImage, GuestImageError, ensure_image, missing_prerequisites
from .vm import BOOT_TIMEOUT, Guest, GuestSpec, start_guests

SHARED_SPECS = (
    GuestSpec(name="g1", ip="10.0.2.11/24"),
    GuestSpec(name="g2", ip="10.0.2.12/24"),
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but real guests are unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    missing = missing_prerequisites()
    if missing:
        _unavailable("real guests need: " + "; ".join(missing))
    try:
        return ensure_image()
    except GuestImageError as exc:
        _unavailable(str(exc))


class GuestFactory:
    """Boots guests for one test and stops every one of them at teardown."""

    def __init__(self, image: GuestImage, workdir: Path) -> None:
        self.image = image
        self.workdir = workdir
        self.guests: list[Guest] = []

    def __call__(
        self, spec: GuestSpec | None = None, /, *, timeout: float = BOOT_TIMEOUT, **options: Any
    ) -> Guest:
        """Boot one guest (``spec`` and/or GuestSpec fields) and wait until it is ready."""
        if spec is None:
            options.setdefault("name", f"guest{len(self.guests) + 1}")
            spec = GuestSpec(**options)
        elif options:
            spec = replace(spec, **options)
        return self.many([spec], timeout)[0]

    def many(self, specs: Sequence[GuestSpec], timeout: float = BOOT_TIMEOUT) -> list[Guest]:
        """Boot several guests in parallel; names must be unique within the test."""
        taken = {g.name for g in self.guests}
        clash = taken.intersection(s.name for s in specs)
        if clash:
            raise ValueError(f"guest name(s) already used in this test: {sorted(clash)}")
        guests = start_guests(specs, self.workdir, self.image, timeout)
        self.guests.extend(guests)
        return guests

    def stop_all(self) -> None:
        for guest in self.guests:
            guest.stop()


@pytest.fixture
def guest_factory(guest_image: GuestImage, tmp_path: Path) -> Iterator[GuestFactory]:
    factory = GuestFactory(guest_image, tmp_path / "guests")
    try:
        yield factory
    finally:
        factory.stop_all()


class SharedGuests:
    """The two shared guests, and the check that keeps one broken guest to one failure.

    Tests kill the agent inside a shared guest on purpose (busybox init respawns it); if
    it ever does not come back, every later test on that guest would fail too (it
    happened once in CI: 19 tests after one). Before each test the agents are synced;
    a guest whose agent stays silent is stopped and booted afresh, with a warning that
    carries the dead guest's console tail, so the cause is in the report.
    """

    HEALTH_TIMEOUT = 20.0  # covers a respawn under load: the agent is up again in ~1 s

    def __init__(
        self, image: GuestImage, workdir: Path, specs: Sequence[GuestSpec] = SHARED_SPECS
    ) -> None:
        self.image = image
        self.workdir = workdir
        self.guests = start_guests(specs, workdir, image)
        self.reboots = 0

    def _answers(self, guest: Guest) -> bool:
        deadline = time.monotonic() + self.HEALTH_TIMEOUT
        while guest.is_running():
            try:
                with open_agent(guest.agent_socket, timeout=2.0):
                    return True
            except (OSError, AgentTimeout):
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
        return False

    def heal(self) -> None:
        """Reboot every guest whose agent does not answer (same spec, fresh workdir)."""
        for index, guest in enumerate(self.guests):
            if self._answers(guest):
                continue
            self.reboots += 1
            tail = guest.console_tail(30)
            running = guest.is_running()  # before stop(): whether QEMU itself had died
            guest.stop()
            warnings.warn(
                f"shared guest {guest.name}: agent silent for {self.HEALTH_TIMEOUT:.0f} s"
                f" (QEMU running: {running}); booted afresh.\n"
                f"-- its console tail ({guest.console_log}):\n{tail}",
                stacklevel=1,
            )
            fresh_dir = self.workdir / f"reboot{self.reboots}"
            self.guests[index] = start_guests([guest.spec], fresh_dir, self.image)[0]

    def stop(self) -> None:
        for guest in self.guests:
            guest.stop()


@pytest.fixture(scope="session")
def shared_guest_pool(
    guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedGuests]:
    pool = SharedGuests(guest_image, tmp_path_factory.mktemp("shared-guests"))
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def shared_guests(shared_guest_pool: SharedGuests) -> list[Guest]:
    """``[g1, g2]``: do not power them off, leave them thawed and their agents up
    (checked before each test: see SharedGuests)."""
    shared_guest_pool.heal()
    return shared_guest_pool.guests
