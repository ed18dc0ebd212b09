"""Guest administration in real guests (real qemu-ga 7.2 under TCG): the clock set to the
operator's time and back to the host's, a user's password (clear and crypted) in the
guest's /etc/shadow, and SSH keys added and removed from the CLI, each change read back
inside the guest afterwards. Nothing secret reaches the audit log."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from qgadash.fleet.admin import Secret
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import load_config
from qgadash.fleet.engine import FleetEngine
from tests.guests.product import (
    audit_entries,
    cli_json,
    run_cli,
    run_in_guest,
    vm_id,
    write_hosts,
)
from tests.guests.vm import Guest

pytestmark = pytest.mark.guest

USER = "tester"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq2d0Ct8fY2qgadash17 leaked@laptop"
HASH = (
    "$6$qgadash17$5Hf3nQm0m8mZ1lqfR0yY2mXWqkS0kSg4bH6m2yYgK5m0zJtR5q4n5n0"
    "rJfC1hG3dE0Ww2xX1bCvZz9r7Q0aBc."
)


def guest_sh(guest: Guest, script: str, timeout: float = 30.0) -> str:
    """Run a shell script in the guest over the raw agent (no qgadash code): its stdout."""
    with guest.agent() as agent:
        args = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
        pid = agent.execute("guest-exec", args)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = agent.execute("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                return base64.b64decode(status.get("out-data", "")).decode()
            assert time.monotonic() < deadline, f"{script!r} did not finish"
            time.sleep(0.05)


def _engine(tmp_path: Path, guests: list[Guest]) -> FleetEngine:
    hosts = write_hosts(tmp_path / "hosts.toml", guests)
    return FleetEngine(load_config(hosts), audit=AuditLog(tmp_path / "audit.jsonl"))


async def _guest_epoch(engine: FleetEngine, guest: Guest) -> float:
    """The guest's clock minus ours, read inside the guest (`date +%s`), seconds."""
    before = time.time()
    out = await run_in_guest(engine, guest, "date +%s")
    after = time.time()
    return int(out["stdout"].strip()) - (before + after) / 2


async def test_clock_set_to_the_operators_time_then_synced_back(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    engine = _engine(tmp_path, shared_guests)
    ids = [vm_id(g) for g in shared_guests]
    try:
        await engine.poll_once()
        ahead = time.time_ns() + 3600 * 10**9
        results = await engine.admin.time_sync(ids, when_ns=ahead)
        assert all(r.ok for r in results), results
        for r in results:
            assert abs(r.value["drift_after_s"] - 3600) < 15, r.value
        for guest in shared_guests:
            assert abs(await _guest_epoch(engine, guest) - 3600) < 15  # seen inside
        # Back to our time (`--time now`): the guest's hardware clock is written too.
        back = await engine.admin.time_sync(ids, when_ns=time.time_ns())
        assert all(r.ok for r in back), back
        for r in back:
            assert abs(r.value["drift_before_s"] - 3600) < 15
            assert abs(r.value["drift_after_s"]) < 15
        # A sync from the hardware clock (virsh domtime --sync) keeps it right.
        synced = await engine.admin.time_sync(ids)
        assert all(r.ok for r in synced), synced
        for guest in shared_guests:
            assert abs(await _guest_epoch(engine, guest)) < 15
    finally:
        await engine.admin.time_sync(ids, when_ns=time.time_ns())  # leave them right
        await engine.stop()


async def test_password_lands_in_the_guests_shadow_and_nowhere_else(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    guest = shared_guests[0]
    engine = _engine(tmp_path, [guest])
    secret = "Qg4dash-17-correct-horse"
    try:
        await engine.poll_once()
        (result,) = await engine.admin.set_password([vm_id(guest)], USER, Secret(secret))
        assert result.ok, result.error
        line = (await run_in_guest(engine, guest, f"grep '^{USER}:' /etc/shadow"))["stdout"]
        field = line.split(":")[1]
        assert field.startswith("$6$"), line  # hashed by the guest's chpasswd
        salt = field.split("$")[2]
        again = await run_in_guest(engine, guest, f"mkpasswd -m sha512 -S {salt} '{secret}'")
        assert again["stdout"].strip() == field  # the password we sent, and no other
        (crypted,) = await engine.admin.set_password(
            [vm_id(guest)], USER, Secret(HASH), crypted=True
        )
        assert crypted.ok, crypted.error
        line = (await run_in_guest(engine, guest, f"grep '^{USER}:' /etc/shadow"))["stdout"]
        assert line.split(":")[1] == HASH
        (unknown,) = await engine.admin.set_password([vm_id(guest)], "nobody17", Secret("x"))
        assert unknown.ok is False and "failed to set user password" in (unknown.error or "")
        audit = (tmp_path / "audit.jsonl").read_text()
        assert secret not in audit and HASH not in audit and "qgadash17$" not in audit
    finally:
        await engine.stop()


def test_ssh_keys_added_and_removed_from_the_cli(
    tmp_path: Path, shared_guests: list[Guest]
) -> None:
    hosts = write_hosts(tmp_path / "hosts.toml", shared_guests)
    keyfile = tmp_path / "leaked.pub"
    keyfile.write_text(KEY + "\n")
    ids = [vm_id(g) for g in shared_guests]
    added = run_cli(
        hosts, "ssh-keys", "add", str(keyfile), "--user", USER, "--yes", tmp_path=tmp_path
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert added.stdout.count(f"+ {KEY}") == 2
    listed = run_cli(hosts, "ssh-keys", "list", "--user", USER, "--json", tmp_path=tmp_path)
    doc = cli_json(listed)
    assert {r["id"]: r["value"] for r in doc["results"]} == {i: [KEY] for i in ids}
    # Inside the guests: the file qemu-ga wrote, the user's, 0600 in a 0700 .ssh.
    for guest in shared_guests:
        seen = guest_sh(
            guest,
            f"cat /home/{USER}/.ssh/authorized_keys;"
            f" stat -c '%a %u' /home/{USER}/.ssh /home/{USER}/.ssh/authorized_keys",
        )
        assert KEY in seen and "700 1000" in seen and "600 1000" in seen, seen
    removed = run_cli(
        hosts, "ssh-keys", "remove", str(keyfile), "--user", USER, "--yes", tmp_path=tmp_path
    )
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert removed.stdout.count(f"- {KEY}") == 2
    for guest in shared_guests:
        seen = guest_sh(guest, f"cat /home/{USER}/.ssh/authorized_keys")
        assert KEY not in seen
    actions = [e["action"] for e in audit_entries(tmp_path)]
    assert actions.count("ssh-keys add") == 2 and actions.count("ssh-keys remove") == 2
