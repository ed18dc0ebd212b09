"""The details' Admin tab on the real engine with simulated guests: vCPUs online and
offline, the SSH keys of root, the logged-in users and a user asked for, read each time
the tab opens (in read-only mode too: the commands only read), keys shown as type,
fingerprint and comment; an agent without the SSH commands says why."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TabbedContent

from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import AgentState
from qgadash.sim import SimFleet, SimVm, make_profile
from qgadash.ui.app import QgadashApp
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.modals.prompt import PromptScreen

from .conftest import SIZE
from .screen import wait_until

# An Ed25519 public key as OpenSSH encodes it: the type, then 32 bytes of key.
BLOB = base64.b64encode(
    b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + hashlib.sha256(b"admin tab 17").digest()
).decode()
KEY = f"ssh-ed25519 {BLOB} ops@laptop"
# Not base64: qemu-ga stores it (it checks only for blank lines and comments).
OTHER = "ssh-ed25519 not*base64 second@desk"
IDS = ["sim/a", "sim/old"]


def fingerprint(blob: str) -> str:
    """What `ssh-keygen -l` prints for a key (written out here, not the product's code)."""
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[FleetEngine]:
    linux = [dataclasses.replace(p, vcpus=4) for p in map(make_profile, range(40)) if not p.windows]
    vms = [
        SimVm("a", linux[0]),
        SimVm("old", dataclasses.replace(linux[2], agent_version="5.1.0")),
    ]
    async with SimFleet(tmp_path / "sim", vms) as sim:
        hosts = sim.write_hosts_toml(tmp_path / "hosts.toml", poll_interval=0.3, timeout=1.0)
        eng = FleetEngine(load_config(hosts))
        try:
            yield eng
        finally:
            await eng.stop()


def answering(engine: FleetEngine) -> bool:
    snaps = [engine.store.get(i) for i in IDS]
    return all(s is not None and s.agent is AgentState.OK for s in snaps)


def admin_body(app: QgadashApp) -> str:
    found = app.screen.query("#admin-body")
    return str(found.first(Static).content) if found else ""


async def test_admin_tab_reads_vcpus_and_keys_when_it_opens(engine: FleetEngine) -> None:
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        assert all(r.ok for r in await engine.admin.set_vcpus(["sim/a"], 3))
        await engine.admin.ssh_keys_change(["sim/a"], "root", [KEY], remove=False)
        app.open_details("sim/a")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await pilot.press("6")
        await wait_until(pilot, lambda: "SHA256:" in admin_body(app), timeout=15)
        text = admin_body(app)
        assert "3 of 4 online" in text
        assert "offline    3" in text and "fixed      0 (cannot be taken offline)" in text
        assert f"ssh-ed25519  {fingerprint(BLOB)}  ops@laptop" in text
        assert BLOB not in text  # the key material itself is not drawn
        users = engine.store.get("sim/a").facts.users  # type: ignore[union-attr]
        assert users  # the simulated guest reports logged-in users: each gets a row
        for user in users:
            assert f"\n {user.name}" in text

        # Read again each time the tab opens: a key added meanwhile shows up.
        await engine.admin.ssh_keys_change(["sim/a"], "root", [OTHER], remove=False)
        await pilot.press("1")
        await pilot.press("6")
        await wait_until(pilot, lambda: "second@desk" in admin_body(app), timeout=15)
        assert "2 keys" in admin_body(app) and admin_body(app).count("SHA256:") == 1
        assert "not a key: ssh-ed25519" in admin_body(app)  # shown cut short, as text

        # u: another user's keys, read with the rest.
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await wait_until(pilot, lambda: bool(app.screen.query("#user")))
        app.screen.query_one("#user", Input).value = "nosuchuser"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "nosuchuser" in admin_body(app), timeout=15)
        text = admin_body(app)
        assert "\n nosuchuser   could not read: " in text  # first: the answer to the question
        assert "failed to lookup user 'nosuchuser'" in text and "\n root         2 keys" in text


async def test_old_agent_says_why_there_are_no_keys(engine: FleetEngine) -> None:
    engine.config = dataclasses.replace(
        engine.config, settings=dataclasses.replace(engine.config.settings, read_only=True)
    )
    app = QgadashApp(engine, config_label="sim")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: answering(engine))
        app.open_details("sim/old")
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await pilot.press("6")
        await wait_until(pilot, lambda: "online" in admin_body(app), timeout=15)
        assert app.screen.query_one(TabbedContent).active == "admin"
        text = admin_body(app)
        assert "4 of 4 online" in text  # read-only mode reads them (qemu-ga 5.1 has them)
        assert "not shown: this agent has no guest-ssh-get-authorized-keys" in text
