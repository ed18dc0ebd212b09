"""The audit log on its own: one JSON line per record, secrets and command lines kept out,
payloads reduced to their length, private files, and a failing disk reported, not raised.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from qgadash.fleet.audit import AuditLog, default_audit_path, mask_arguments


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_secrets_are_masked_wherever_they_are_nested() -> None:
    args = {
        "username": "root",
        "password": "S3cr3t",
        "crypted": False,
        "inner": [{"passwd": "x", "secret": "y", "keep": 1}],
    }
    assert mask_arguments(args) == {
        "username": "root",
        "password": "***",
        "crypted": "***",
        "inner": [{"passwd": "***", "secret": "***", "keep": 1}],
    }


def test_payloads_become_their_length_and_other_values_stay() -> None:
    args = {"handle": 7, "buf-b64": "QUJD" * 10, "input-data": "eA=="}
    assert mask_arguments(args) == {
        "handle": 7,
        "buf-b64": "<40 base64 chars>",
        "input-data": "<4 base64 chars>",
    }
    assert mask_arguments({"buf-b64": None}) == {"buf-b64": None}  # not a payload: kept
    assert mask_arguments("plain") == "plain"
    assert mask_arguments(None) is None


def test_command_lines_and_environments_are_a_count_unless_kept() -> None:
    args = {"path": "/usr/bin/mysql", "arg": ["-u", "root", "-pS3cr3t"], "env": ["A=1", "B=2"]}
    assert mask_arguments(args) == {
        "path": "/usr/bin/mysql",
        "arg": "<3 arguments hidden>",
        "env": "<2 variables hidden>",
    }
    assert mask_arguments({"argv": ["mysql", "-pS3cr3t"]}) == {
        "argv": ["mysql", "<1 arguments hidden>"]
    }
    assert mask_arguments({"argv": ["true"]}) == {"argv": ["true"]}  # nothing to hide
    assert mask_arguments({"argv": []}) == {"argv": "<0 arguments hidden>"}
    assert mask_arguments(args, keep_argv=True) == args
    nested = {"outer": {"argv": ["a", "b"]}}
    assert mask_arguments(nested, keep_argv=True) == nested
    assert mask_arguments(nested) == {"outer": {"argv": ["a", "<1 arguments hidden>"]}}
    assert mask_arguments([{"env": ["X=1"]}]) == [{"env": "<1 variables hidden>"}]
    assert mask_arguments([{"env": ["X=1"]}], keep_argv=True) == [{"env": ["X=1"]}]
    # A command line that is not a list is not a command line: masked by the other rules.
    assert mask_arguments({"arg": "-pS3cr3t"}) == {"arg": "-pS3cr3t"}


def test_each_record_is_one_json_line_with_who_what_and_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "operator")
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.record("freeze", "hv/vm1", {"password": "x"}, True, None, 12.345)
    log.record("thaw (deadline)", "hv/vm2", None, False, "timeout", 0.04)
    first, second = lines(path)
    assert first == {
        "time": first["time"],
        "user": "operator",
        "vm": "hv/vm1",
        "action": "freeze",
        "arguments": {"password": "***"},
        "ok": True,
        "error": None,
        "elapsed_ms": 12.3,
    }
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00Z")
    assert second["ok"] is False and second["error"] == "timeout" and second["elapsed_ms"] == 0.0
    assert path.read_text().count("\n") == 2
    assert log.failed is None


def test_records_keep_non_ascii_text_readable(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).record("upload", "hv/café", {"path": "/tmp/é"}, True, None, 1)
    assert '"vm": "hv/café"' in path.read_text(encoding="utf-8")


def test_command_lines_are_kept_when_the_operator_asks(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, keep_argv=True).record("exec", "hv/vm", {"argv": ["a", "b"]}, True, None, 1)
    AuditLog(path).record("exec", "hv/vm", {"argv": ["a", "b"]}, True, None, 1)
    kept, hidden = lines(path)
    assert kept["arguments"] == {"argv": ["a", "b"]}
    assert hidden["arguments"] == {"argv": ["a", "<1 arguments hidden>"]}


def test_the_user_is_user_then_logname_then_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "u1")
    monkeypatch.setenv("LOGNAME", "l1")
    assert AuditLog(Path("x")).user == "u1"
    monkeypatch.delenv("USER")
    assert AuditLog(Path("x")).user == "l1"
    monkeypatch.delenv("LOGNAME")
    assert AuditLog(Path("x")).user == str(os.getuid())


def test_the_log_lives_under_xdg_state_home_or_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_audit_path() == tmp_path / "xdg" / "qgadash" / "audit.jsonl"
    assert AuditLog().path == tmp_path / "xdg" / "qgadash" / "audit.jsonl"
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "qgadash" / "audit.jsonl"
    assert default_audit_path() == expected


def test_a_new_log_is_private_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "audit.jsonl"
    AuditLog(path).record("thaw", "hv/vm", None, True, None, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_existing_log_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    path.parent.mkdir(mode=0o755)
    os.chmod(path.parent, 0o755)
    path.write_text('{"old": 1}\n')
    os.chmod(path, 0o644)
    AuditLog(path).record("thaw", "hv/vm", None, True, None, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(lines(path)) == 2  # appended, not replaced


def test_a_private_log_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    path.parent.mkdir(mode=0o700)
    path.write_text("")
    os.chmod(path, 0o400)  # stricter than asked: not widened (root still writes it)
    AuditLog(path).record("thaw", "hv/vm", None, True, None, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_a_symlink_planted_as_the_log_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "audit.jsonl"
    path.symlink_to(victim)
    log = AuditLog(path)
    log.record("thaw", "hv/vm", None, True, None, 1)
    assert victim.read_text() == "precious\n"
    assert log.failed is not None and f"cannot write the audit log {path}: " in log.failed


def test_an_unwritable_log_is_reported_with_the_reason_and_the_action_goes_on(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = AuditLog(blocker / "audit.jsonl")
    log.record("thaw", "hv/vm", None, True, None, 1.0)  # does not raise
    assert log.failed == f"cannot write the audit log {blocker / 'audit.jsonl'}: File exists"
