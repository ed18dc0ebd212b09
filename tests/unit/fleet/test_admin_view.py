"""The Admin tab's pure parts: an authorized_keys line made short (its fingerprint as
ssh-keygen prints it), and whose keys are read."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from qgadash.agent.replies import OsInfo, User
from qgadash.fleet.admin_view import MAX_USERS, key_summary, key_users
from qgadash.fleet.model import AgentState, GuestFacts, VmRef, VmSnapshot

BLOB = base64.b64encode(
    b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + hashlib.sha256(b"unit").digest()
).decode()


def snapshot(users: tuple[str, ...], windows: bool = False) -> VmSnapshot:
    os_info = OsInfo("mswindows" if windows else "debian", "", "", "", "", "", "", "", "")
    facts = GuestFacts(os=os_info, users=tuple(User(u, None, None) for u in users))
    return VmSnapshot(VmRef("hv", "vm", "unix:/x"), AgentState.OK, facts=facts)


def test_a_key_line_becomes_type_fingerprint_comment_and_options() -> None:
    key = key_summary(f'from="10.0.0.0/8",no-pty ssh-ed25519 {BLOB} ops@laptop (work)')
    assert key.key_type == "ssh-ed25519"
    assert key.comment == "ops@laptop (work)"
    assert key.options == 'from="10.0.0.0/8",no-pty'
    digest = hashlib.sha256(base64.b64decode(BLOB)).digest()
    assert key.fingerprint == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
def test_the_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@here", "-f", str(tmp_path / "k")],
        check=True,
    )
    line = (tmp_path / "k.pub").read_text().strip()
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], check=True, capture_output=True
    ).stdout.decode()
    assert key_summary(line).fingerprint == printed.split()[1]


def test_lines_that_are_not_keys_keep_their_text() -> None:
    for line in ("ssh-ed25519 not*base64 x", "garbage", "ssh-rsa"):
        key = key_summary(line)
        assert key.fingerprint is None and key.comment == line


def test_whose_keys_root_or_administrator_then_logged_in_then_asked() -> None:
    assert key_users(snapshot(("ops", "root", "ops"))) == ("root", "ops")
    assert key_users(snapshot(("Administrator", "jo"), windows=True)) == ("Administrator", "jo")
    assert key_users(snapshot(("ops",)), ["alice", "bob"]) == ("bob", "alice", "root", "ops")
    many = key_users(snapshot(tuple(f"u{i}" for i in range(20))), ["asked"])
    assert len(many) == MAX_USERS and many[:2] == ("asked", "root")
    assert key_users(None) == ("root",)
