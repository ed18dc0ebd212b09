"""The hold journal: one durable, private record per hold; records that are not ours or
not whole are reported, never trusted; owners are told alive or dead by pid and start."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from qgadash.fleet.config import HypervisorConfig
from qgadash.fleet.holds import (
    JOURNAL_VERSION,
    LOCAL_KEEPER,
    HoldJournal,
    HoldRecord,
    Owner,
    Reach,
    default_journal_path,
    new_token,
    process_start,
    state_directory,
)


def a_record(token: str = "0123456789abcdef", **changes: object) -> HoldRecord:
    values: dict[str, object] = {
        "token": token,
        "vm_id": "hv1/vm1",
        "reach": Reach("hv1", "/run/vm1.sock", "sudo", "admin@hv1", "~/.ssh/k", "kh", "jump"),
        "deadline": 1_900_000_000.5,
        "keeper": LOCAL_KEEPER,
        "owner": Owner(1234, "5678", "laptop"),
        "created": 1_899_999_000.25,
    }
    values.update(changes)
    return HoldRecord(**values)  # type: ignore[arg-type]


def test_the_journal_lives_under_xdg_state_home_or_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_directory() == tmp_path / "xdg" / "qgadash"
    assert default_journal_path() == tmp_path / "xdg" / "qgadash" / "holds"
    assert HoldJournal().directory == tmp_path / "xdg" / "qgadash" / "holds"
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_directory() == tmp_path / "home" / ".local" / "state" / "qgadash"


def test_tokens_are_16_hex_digits_and_differ() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in tokens)


def test_a_record_written_is_read_back_whole_from_a_private_file(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path / "holds")
    record = a_record()
    journal.write(record)
    assert journal.load() == ([record], [])
    path = tmp_path / "holds" / f"{record.token}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "holds").stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["version"] == JOURNAL_VERSION == 1
    assert doc["reach"]["via"] == "sudo" and doc["owner"]["pid"] == 1234
    assert sorted(p.name for p in (tmp_path / "holds").iterdir()) == [path.name]  # no .tmp


def test_a_rewritten_record_replaces_the_old_one(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path)
    journal.write(a_record(keeper="pending"))
    journal.write(a_record(keeper="systemd"))
    (record,), problems = journal.load()
    assert record.keeper == "systemd" and problems == []


def test_remove_forgets_a_record_once(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path)
    journal.write(a_record("aa11"))
    journal.write(a_record("bb22"))
    assert journal.remove("aa11") is True
    assert journal.remove("aa11") is False
    assert [r.token for r in journal.load()[0]] == ["bb22"]


def test_a_missing_journal_is_empty_and_an_unreadable_one_says_so(tmp_path: Path) -> None:
    assert HoldJournal(tmp_path / "none").load() == ([], [])
    blocker = tmp_path / "file"
    blocker.write_text("")
    records, problems = HoldJournal(blocker).load()
    assert records == []
    assert problems == [f"cannot read the hold journal {blocker}: Not a directory"]


def test_records_that_are_not_whole_are_reported_and_the_rest_read(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path)
    good = a_record("cc33")
    journal.write(good)
    (tmp_path / "aa.json").write_text("{broken")
    (tmp_path / "bb.json").write_text(json.dumps({"version": 2}))
    (tmp_path / "keeper.lock").write_text("")
    (tmp_path / "dd.tmp").write_text("half")
    records, problems = journal.load()
    assert records == [good]
    assert len(problems) == 2
    assert problems[0].startswith(f"unreadable hold record {tmp_path / 'aa.json'}: ")
    assert problems[1] == (
        f"unreadable hold record {tmp_path / 'bb.json'}: not a version-1 hold record"
    )


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"version": 1},
        {**a_record().to_json(), "version": "1"},
        {**a_record().to_json(), "owner": None},
        {**a_record().to_json(), "reach": "hv1"},
        {**a_record().to_json(), "deadline": None},
        {**a_record().to_json(), "token": "../../etc/passwd"},
        {**a_record().to_json(), "reach": {**a_record().to_json()["reach"], "address": 7}},
    ],
    ids=["list", "empty", "version-string", "owner", "reach", "deadline", "token", "address"],
)
def test_a_record_of_the_wrong_shape_is_refused(doc: object) -> None:
    with pytest.raises(ValueError):
        HoldRecord.from_json(doc)


def test_a_record_round_trips_through_json() -> None:
    record = a_record()
    assert HoldRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    no_start = a_record(owner=Owner(1, None, "h"))
    assert HoldRecord.from_json(no_start.to_json()).owner.start is None


def test_a_bad_token_is_never_a_path(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path)
    with pytest.raises(ValueError, match="bad hold token"):
        journal.remove("../x")
    with pytest.raises(ValueError):
        journal.write(a_record("a/b"))


def test_reach_remembers_how_to_rebuild_the_link() -> None:
    hv = HypervisorConfig(
        "hv1", ssh="admin@hv1", via="exec", identity="id", known_hosts="kh", jump="j"
    )
    reach = Reach.of(hv, "ignored", "/run/qga/vm1.sock")
    assert reach == Reach("hv1", "/run/qga/vm1.sock", "exec", "admin@hv1", "id", "kh", "j")
    assert not reach.local
    again = reach.hypervisor_config()
    assert (again.name, again.ssh, again.via, again.identity, again.known_hosts, again.jump) == (
        "hv1",
        "admin@hv1",
        "exec",
        "id",
        "kh",
        "j",
    )
    plain = Reach.of(None, "local", "tcp:127.0.0.1:4444")
    assert plain == Reach("local", "tcp:127.0.0.1:4444") and plain.local
    assert plain.via == "socket"


def test_reach_keeps_the_libvirt_uri_so_a_session_domain_is_thawed_through_it() -> None:
    hv = HypervisorConfig("lab", via="libvirt", uri="qemu:///session")
    reach = Reach.of(hv, "lab", "6d1c7b0e-5c55-4d2b-9d6c-7f4e0a3b1c01")
    assert reach.uri == "qemu:///session"
    assert reach.hypervisor_config().uri == "qemu:///session"
    stored = json.loads(json.dumps({k: getattr(reach, k) for k in Reach.__dataclass_fields__}))
    assert Reach(**stored).uri == "qemu:///session"


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    me = Owner.this_process()
    assert me.pid == os.getpid() and me.host == socket.gethostname()
    assert me.start == process_start(os.getpid()) and me.start is not None
    assert me.alive()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not Owner(pid, None, me.host).alive()


def test_a_reused_pid_is_not_its_old_owner() -> None:
    parent = os.getppid()
    start = process_start(parent)
    host = socket.gethostname()
    assert Owner(parent, start, host).alive()
    assert not Owner(parent, "1", host).alive()  # same pid, another start: not the owner
    assert Owner(parent, None, host).alive()  # no start recorded: the pid decides


def test_another_machines_owner_is_taken_as_alive() -> None:
    assert Owner(999_999_999, "1", "another-host.example").alive()


def test_an_owner_of_another_user_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", denied)
    assert Owner(1, None, socket.gethostname()).alive()


def test_process_start_reads_field_22_after_a_name_with_spaces_and_parens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert process_start(2**22 + 12345) is None  # no such process
    real = Path.read_bytes
    fake = b"42 (a) b (c) S " + b" ".join(str(n).encode() for n in range(4, 40))

    def read_bytes(self: Path) -> bytes:
        return fake if str(self) == "/proc/42/stat" else real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert process_start(42) == "22"
    fake = b"42 (short) S 4 5"
    assert process_start(42) is None


def test_a_written_record_survives_as_its_creator_left_it(tmp_path: Path) -> None:
    journal = HoldJournal(tmp_path)
    record = a_record(created=time.time())
    journal.write(record)
    assert HoldJournal(tmp_path).load()[0] == [record]


def test_a_record_removed_between_listing_and_reading_is_skipped_not_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold thawed (its file removed) while the journal is read, or a record being
    written: the records after it must still be read, or their guests would be left to
    nobody."""
    journal = HoldJournal(tmp_path)
    journal.write(a_record("bb22"))
    journal.write(a_record("cc33"))
    (tmp_path / "bb99.tmp").write_text("{")  # another process's write in progress
    listdir = os.listdir
    monkeypatch.setattr(
        "qgadash.fleet.holds.os.listdir", lambda path: ["aa11.json", *listdir(path)]
    )
    records, problems = journal.load()
    assert [r.token for r in records] == ["bb22", "cc33"] and problems == []


def test_a_symlink_planted_at_the_temporary_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    """The record goes to `<token>.tmp` first: a link there (another user's trick, a
    stale one) must make the write fail, never truncate or fill the file it points to."""
    journal = HoldJournal(tmp_path / "holds")
    journal.write(a_record("aa11"))  # creates the directory
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "holds" / "bb22.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        journal.write(a_record("bb22"))
    assert victim.read_text() == "precious\n"
