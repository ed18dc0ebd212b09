"""pytest plugin with real-guest fixtures.

Register from ``tests/conftest.py`` with ``pytest_plugins = ["tests.guests.fixtures"]``.

- ``guest_image`` (session): the cached kernel + initramfs (built on first use).
- ``guest_factory`` (function): ``guest_factory(**GuestSpec fields) -> Guest`` and
  ``guest_factory.many([GuestSpec, ...]) -> list[Guest]``; all stopped after the test.
- ``shared_guests`` (session): ``[g1, g2]``, two agent guests booted once, for tests
  that leave them running, unfrozen and with their agent up.

Missing QEMU/packages skip the test, or fail it when ``CI=true`` (a CI machine that
silently skips every real-guest test would prove nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest

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


@pytest.fixture(scope="session")
def shared_guests(
    guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Guest]]:
    """``[g1, g2]``: do not power them off, leave them thawed and their agents up."""
    workdir = tmp_path_factory.mktemp("shared-guests")
    guests = start_guests(SHARED_SPECS, workdir, guest_image)
    try:
        yield guests
    finally:
        for guest in guests:
            guest.stop()
