"""HoldKeeping on its own: arming a hold (journal first, then a keeper), disarming it when
the hold ends, and settling what a dead qgadash left. Hypervisor keepers are fakes that
answer as told; the real ones are in tests/integration/test_remote_keeper.py."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.fleet import keeping as keeping_module
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Settings
from qgadash.fleet.guard import Hold
from qgadash.fleet.holds import LOCAL_KEEPER, NO_KEEPER, HoldJournal, HoldRecord, Owner, Reach
from qgadash.fleet.keeper import KEEPER_GRACE, KeeperUnavailable
from qgadash.fleet.keeping import KEEPER_TIMEOUT, HoldKeeping, HoldNotDurable, Settled


class FakeKeeper:
    """A hypervisor keeper: records each call; `fail` makes every call raise."""

    def __init__(self, kind: str = "systemd", fail: str | None = None) -> None:
        self.kind = kind
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []
        self.pending_answer = True
        self.probe_answer: str | None = None

    def _maybe_fail(self) -> None:
        if self.fail:
            raise AgentConnectionError(self.fail)

    async def probe(self, timeout: float) -> str | None:
        self.calls.append(("probe", timeout))
        self._maybe_fail()
        return self.probe_answer

    async def arm(self, address: str, token: str, seconds: float, timeout: float) -> str:
        self.calls.append(("arm", address, token, seconds, timeout))
        self._maybe_fail()
        return self.kind

    async def disarm(self, token: str, timeout: float) -> None:
        self.calls.append(("disarm", token, timeout))
        self._maybe_fail()

    async def pending(self, token: str, timeout: float) -> bool:
        self.calls.append(("pending", token, timeout))
        self._maybe_fail()
        return self.pending_answer


class FakeLink:
    def __init__(self, keeper: FakeKeeper | None) -> None:
        self.keeper = keeper
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def journal(tmp_path: Path) -> HoldJournal:
    return HoldJournal(tmp_path / "holds")


@pytest.fixture
def keeping(journal: HoldJournal, audit_path: Path) -> HoldKeeping:
    return HoldKeeping(journal, AuditLog(audit_path))


@pytest.fixture
def local_starts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, Path | None]]:
    """ensure_local_keeper, stubbed: each call recorded, no process started."""
    calls: list[tuple[Path, Path | None]] = []

    async def ensure(journal: HoldJournal, audit_path: Path | None) -> None:
        calls.append((journal.directory, audit_path))

    monkeypatch.setattr(keeping_module, "ensure_local_keeper", ensure)
    return calls


REACH = Reach("hv1", "/run/vm1.sock", "socket", "admin@hv1")


def hold(deadline: float | None = None) -> Hold:
    return Hold("hv1/vm1", time.time() + 60 if deadline is None else deadline)


async def test_keeper_for_says_why_no_keeper_can_be_armed(tmp_path: Path) -> None:
    local = FakeLink(None)
    assert await HoldKeeping(HoldJournal(tmp_path), None).keeper_for(local) is None  # type: ignore[arg-type]
    assert await HoldKeeping(None, None).keeper_for(local) == (  # type: ignore[arg-type]
        "no hold journal (the local keeper needs one)"
    )
    assert await HoldKeeping(HoldJournal(tmp_path), None, local_keeper=False).keeper_for(
        local  # type: ignore[arg-type]
    ) == ("no hold journal (the local keeper needs one)")
    remote = FakeKeeper()
    remote.probe_answer = "no systemd-run or setsid"
    assert await HoldKeeping(None, None).keeper_for(FakeLink(remote)) == "no systemd-run or setsid"  # type: ignore[arg-type]
    assert remote.calls == [("probe", KEEPER_TIMEOUT)]
    down = FakeKeeper(fail="hv1: connection refused")
    assert await HoldKeeping(None, None).keeper_for(FakeLink(down)) == "hv1: connection refused"  # type: ignore[arg-type]


async def test_arming_a_local_hold_writes_the_journal_then_starts_the_local_keeper(
    keeping: HoldKeeping,
    journal: HoldJournal,
    audit_path: Path,
    local_starts: list[tuple[Path, Path | None]],
) -> None:
    h = hold()
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    assert h.keeper == LOCAL_KEEPER and h.token.isalnum() and len(h.token) == 16
    (record,) = journal.load()[0]
    assert (record.token, record.vm_id, record.reach, record.deadline, record.keeper) == (
        h.token,
        "hv1/vm1",
        REACH,
        h.deadline,
        LOCAL_KEEPER,
    )
    assert record.owner == Owner.this_process()
    assert abs(record.created - time.time()) < 5
    assert local_starts == [(journal.directory, audit_path)]
    (line,) = audit_lines(audit_path)
    assert (line["action"], line["vm"], line["ok"], line["arguments"]) == (
        "keeper armed",
        "hv1/vm1",
        True,
        {"token": h.token, "keeper": LOCAL_KEEPER},
    )


async def test_arming_without_a_journal_does_nothing(local_starts: list[Any]) -> None:
    h = hold()
    await HoldKeeping(None, None).arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    assert h.token == "" and h.keeper == "none" and local_starts == []


async def test_a_hold_that_cannot_be_written_is_not_durable_and_nothing_is_armed(
    tmp_path: Path, audit_path: Path, local_starts: list[Any]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    keeping = HoldKeeping(HoldJournal(blocker / "holds"), AuditLog(audit_path))
    remote = FakeKeeper()
    h = hold()
    with pytest.raises(HoldNotDurable, match=f"cannot write the hold journal {blocker / 'holds'}"):
        await keeping.arm(h, REACH, FakeLink(remote), 60)  # type: ignore[arg-type]
    assert HoldNotDurable.request_sent is False
    assert remote.calls == [] and local_starts == [] and h.token == ""


async def test_arming_a_remote_hold_arms_the_hypervisor_keeper_past_the_deadline(
    keeping: HoldKeeping, journal: HoldJournal, audit_path: Path, local_starts: list[Any]
) -> None:
    remote = FakeKeeper("nohup")
    h = hold()
    await keeping.arm(h, REACH, FakeLink(remote), 30)  # type: ignore[arg-type]
    assert remote.calls == [("arm", REACH.address, h.token, 30 + KEEPER_GRACE, KEEPER_TIMEOUT)]
    assert h.keeper == "nohup" and local_starts == []
    (record,) = journal.load()[0]
    assert (record.keeper, record.token, record.vm_id) == ("nohup", h.token, "hv1/vm1")
    (line,) = audit_lines(audit_path)
    assert line["ok"] is True and line["arguments"] == {"token": h.token, "keeper": "nohup"}


@pytest.mark.parametrize("failure", ["remote", "local"])
async def test_a_keeper_that_cannot_be_armed_leaves_a_journal_only_hold_and_says_why(
    keeping: HoldKeeping,
    journal: HoldJournal,
    audit_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    if failure == "remote":
        link = FakeLink(FakeKeeper(fail="hv1: sudo: a password is required\nsecond line"))
    else:
        link = FakeLink(None)

        async def cannot(journal: HoldJournal, audit_path: Path | None) -> None:
            raise KeeperUnavailable("the local keeper exited at once (status 1)")

        monkeypatch.setattr(keeping_module, "ensure_local_keeper", cannot)
    h = hold()
    with caplog.at_level("WARNING", logger="qgadash.fleet.keeping"):
        await keeping.arm(h, REACH, link, 60)  # type: ignore[arg-type]
    why = (
        "hv1: sudo: a password is required"
        if failure == "remote"
        else "the local keeper exited at once (status 1)"
    )
    assert h.keeper.startswith(f"{NO_KEEPER}: {why}")
    assert "\n" not in h.keeper
    (record,) = journal.load()[0]
    assert (record.keeper, record.token, record.vm_id) == (NO_KEEPER, h.token, "hv1/vm1")
    assert record.deadline == h.deadline
    (line,) = audit_lines(audit_path)
    assert (line["action"], line["vm"], line["ok"], line["arguments"]) == (
        "keeper armed",
        "hv1/vm1",
        False,
        {"token": h.token},
    )
    assert why in line["error"]
    (logged,) = [r.getMessage() for r in caplog.records]
    assert logged.startswith(f"hv1/vm1: no keeper armed: {why}")


async def test_a_released_local_hold_forgets_its_record_and_audits_the_disarm(
    keeping: HoldKeeping, journal: HoldJournal, audit_path: Path, local_starts: list[Any]
) -> None:
    h = hold()
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    keeping.released(h, "thawed")
    assert journal.load() == ([], [])
    _armed, disarmed = audit_lines(audit_path)
    assert (disarmed["action"], disarmed["ok"], disarmed["arguments"]) == (
        "keeper disarmed",
        True,
        {"token": h.token, "why": "thawed"},
    )
    await keeping.drain()


async def test_a_released_remote_hold_disarms_the_hypervisor_keeper(
    keeping: HoldKeeping, journal: HoldJournal, audit_path: Path
) -> None:
    remote = FakeKeeper()
    h = hold()
    await keeping.arm(h, REACH, FakeLink(remote), 60)  # type: ignore[arg-type]
    keeping.released(h, "dismissed")
    await keeping.drain()
    assert remote.calls[-1] == ("disarm", h.token, KEEPER_TIMEOUT)
    assert journal.load() == ([], [])
    line = audit_lines(audit_path)[-1]
    assert (line["action"], line["vm"], line["ok"], line["arguments"]) == (
        "keeper disarmed",
        "hv1/vm1",
        True,
        {"token": h.token, "keeper": "systemd", "why": "dismissed"},
    )


async def test_a_disarm_that_fails_is_audited_as_failed_and_logged(
    keeping: HoldKeeping, audit_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = FakeKeeper()
    h = hold()
    await keeping.arm(h, REACH, FakeLink(remote), 60)  # type: ignore[arg-type]
    remote.fail = "hv1: link down"
    with caplog.at_level("WARNING", logger="qgadash.fleet.keeping"):
        keeping.released(h, "thawed")
        await keeping.drain()
    line = audit_lines(audit_path)[-1]
    assert (line["action"], line["vm"], line["ok"], line["error"], line["arguments"]) == (
        "keeper disarmed",
        "hv1/vm1",
        False,
        "hv1: link down",
        {"token": h.token, "keeper": "systemd", "why": "thawed"},
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"hv1/vm1: keeper {h.token} not disarmed: hv1: link down"
    ]


async def test_a_moved_deadline_is_written_to_the_journal(
    keeping: HoldKeeping, journal: HoldJournal, local_starts: list[Any]
) -> None:
    """The deadline counts from the freeze (after the keeper was armed): the local
    keeper and a later start read the journal, so it must carry the new one."""
    h = hold(time.time() + 60)
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    assert h.deadline is not None
    h.deadline += 5
    await keeping.moved(h)
    (record,), _problems = journal.load()
    assert (record.token, record.deadline) == (h.token, h.deadline)
    h.deadline += 5
    await keeping.moved(h)  # again: the journal follows the last one
    (record,), _problems = journal.load()
    assert record.deadline == h.deadline
    keeping.released(h, "thawed")
    await keeping.moved(h)  # ended: nothing is written back
    assert journal.load() == ([], [])


async def test_a_moved_deadline_of_an_unarmed_or_untimed_hold_writes_nothing(
    keeping: HoldKeeping, journal: HoldJournal, local_starts: list[Any], tmp_path: Path
) -> None:
    await keeping.moved(hold())  # never armed: no record to move
    assert journal.load() == ([], [])
    h = hold(time.time() + 60)
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    (before,), _problems = journal.load()
    h.deadline = None
    await keeping.moved(h)
    assert journal.load()[0] == [before]
    other = HoldKeeping(None, AuditLog(tmp_path / "other.jsonl"))
    h.deadline = time.time() + 600
    await other.moved(h)  # no journal: nothing to write
    assert journal.load()[0] == [before]
    keeping.released(h, "thawed")


async def test_a_hold_without_a_token_or_journal_releases_nothing(
    keeping: HoldKeeping, audit_path: Path
) -> None:
    keeping.released(hold(), "thawed")  # never armed (thaw after 0, or no journal)
    h = hold()
    h.token = "abc123"
    HoldKeeping(None, AuditLog(audit_path)).released(h, "thawed")
    assert audit_lines(audit_path) == []


# -- settling what an earlier qgadash left ------------------------------------------------


def dead_owner() -> Owner:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return Owner(pid, "0", Owner.this_process().host)


def record(
    journal: HoldJournal, token: str, deadline: float, keeper: str, owner: Owner | None = None
) -> HoldRecord:
    r = HoldRecord(
        token,
        f"hv1/{token}",
        REACH,
        deadline,
        keeper,
        owner or dead_owner(),
        time.time() - 100,
    )
    journal.write(r)
    return r


async def test_settle_thaws_overdue_holds_of_dead_owners_and_leaves_the_rest(
    keeping: HoldKeeping,
    journal: HoldJournal,
    audit_path: Path,
    local_starts: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = time.time()
    record(journal, "overdue", now - 5, NO_KEEPER)
    record(journal, "failing", now - 5, LOCAL_KEEPER)
    record(journal, "later", now + 100, LOCAL_KEEPER)
    record(journal, "alive", now - 5, LOCAL_KEEPER, Owner.this_process())
    (journal.directory / "junk.json").write_text("[]")
    thawed: list[str] = []

    async def thaw_via(r: HoldRecord) -> None:
        if r.token == "failing":
            raise AgentConnectionError("connection refused")
        thawed.append(r.token)

    with caplog.at_level("WARNING", logger="qgadash.fleet.keeping"):
        settled = await keeping.settle(thaw_via)
    assert thawed == ["overdue"]
    assert [r.getMessage() for r in caplog.records] == [
        "hv1/failing: owed thaw from the journal failed: connection refused"
    ]
    by_vm = {s.vm_id: s for s in settled}
    assert by_vm["hv1/overdue"] == Settled("hv1/overdue", "thawed", "")
    assert by_vm["hv1/failing"] == Settled("hv1/failing", "failed", "connection refused")
    assert by_vm["hv1/later"].outcome == "pending"
    assert by_vm["hv1/later"].detail in (
        "local keeper thaws in 100 s",
        "local keeper thaws in 99 s",
    )
    assert by_vm[""].outcome == "failed" and "junk.json" in by_vm[""].detail
    assert "hv1/alive" not in by_vm
    assert local_starts == [(journal.directory, audit_path)]  # for the pending local hold
    assert sorted(r.token for r in journal.load()[0]) == ["alive", "failing", "later"]
    lines = {(line["vm"], line["action"], line["ok"]) for line in audit_lines(audit_path)}
    assert lines == {
        ("hv1/overdue", "thaw (journal)", True),
        ("hv1/failing", "thaw (journal)", False),
    }
    (failed,) = [line for line in audit_lines(audit_path) if line["ok"] is False]
    assert failed["error"] == "connection refused"
    assert failed["arguments"] == {"token": "failing", "deadline": now - 5, "keeper": LOCAL_KEEPER}


async def test_settle_without_a_journal_has_nothing_to_do() -> None:
    async def thaw_via(r: HoldRecord) -> None:
        raise AssertionError("nothing to thaw")

    assert await HoldKeeping(None, None).settle(thaw_via) == []


async def test_settle_leaves_our_own_holds_alone(
    keeping: HoldKeeping, journal: HoldJournal, local_starts: list[Any]
) -> None:
    h = hold(time.time() - 1)
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]

    async def thaw_via(r: HoldRecord) -> None:
        raise AssertionError("ours: the guard thaws it")

    assert await keeping.settle(thaw_via) == []


@pytest.mark.parametrize("fired", [True, False])
async def test_settle_asks_a_hypervisor_keeper_whether_it_already_thawed(
    keeping: HoldKeeping,
    journal: HoldJournal,
    audit_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fired: bool,
) -> None:
    remote = FakeKeeper()
    remote.pending_answer = not fired
    links: list[FakeLink] = []

    def make_link(hv: Any, settings: Any) -> FakeLink:
        assert hv.name == "hv1" and hv.ssh == "admin@hv1"
        links.append(FakeLink(remote))
        return links[-1]

    monkeypatch.setattr(keeping_module, "make_link", make_link)
    due = record(journal, "remote", time.time() - 5, "systemd").deadline
    thawed: list[str] = []

    async def thaw_via(r: HoldRecord) -> None:
        thawed.append(r.token)

    (settled,) = await keeping.settle(thaw_via)
    assert journal.load() == ([], [])
    assert all(link.closed for link in links)
    (line,) = audit_lines(audit_path)
    if fired:
        assert settled == Settled("hv1/remote", "thawed by keeper", "systemd")
        assert thawed == [] and line["action"] == "thaw (keeper)"
        assert remote.calls == [("pending", "remote", KEEPER_TIMEOUT)]
    else:
        assert settled == Settled("hv1/remote", "thawed", "")
        assert thawed == ["remote"] and line["action"] == "thaw (journal)"
        # its keeper gave up (marker left): taken away so it is not read as armed later
        assert remote.calls == [
            ("pending", "remote", KEEPER_TIMEOUT),
            ("disarm", "remote", KEEPER_TIMEOUT),
        ]
    assert line["ok"] is True and line["vm"] == "hv1/remote"
    assert line["arguments"] == {"token": "remote", "deadline": due, "keeper": "systemd"}


async def test_an_unreachable_hypervisor_keeper_is_not_taken_as_fired(
    keeping: HoldKeeping, journal: HoldJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = FakeKeeper(fail="hv1: no route to host")
    monkeypatch.setattr(keeping_module, "make_link", lambda hv, settings: FakeLink(remote))
    record(journal, "remote", time.time() - 5, "nohup")
    thawed: list[str] = []

    async def thaw_via(r: HoldRecord) -> None:
        thawed.append(r.token)

    (settled,) = await keeping.settle(thaw_via)
    assert thawed == ["remote"] and settled.outcome == "thawed"


async def test_drain_waits_for_disarms_in_flight(keeping: HoldKeeping) -> None:
    remote = FakeKeeper()
    gate = asyncio.Event()

    async def slow_disarm(token: str, timeout: float) -> None:
        await gate.wait()
        remote.calls.append(("disarm", token, timeout))

    remote.disarm = slow_disarm  # type: ignore[method-assign]
    h = hold()
    await keeping.arm(h, REACH, FakeLink(remote), 60)  # type: ignore[arg-type]
    keeping.released(h, "thawed")
    draining = asyncio.create_task(keeping.drain())
    await asyncio.sleep(0.01)
    assert not draining.done()
    gate.set()
    await asyncio.wait_for(draining, 2)
    assert remote.calls[-1][0] == "disarm"


def test_agent_errors_are_what_keepers_raise() -> None:
    assert issubclass(HoldNotDurable, AgentError)


async def test_a_hypervisor_that_no_longer_offers_a_keeper_is_thawed_from_the_journal(
    keeping: HoldKeeping, journal: HoldJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper named in the record is gone from its hypervisor (no socat, no systemd
    any more): nobody can say it fired, so the journal's thaw goes out; the link is made
    with default settings (there is no config for a dead owner's link)."""
    links: list[FakeLink] = []
    settings_seen: list[Any] = []

    def make_link(hv: Any, settings: Any) -> FakeLink:
        settings_seen.append(settings)
        links.append(FakeLink(None))
        return links[-1]

    monkeypatch.setattr(keeping_module, "make_link", make_link)
    record(journal, "remote", time.time() - 5, "systemd")
    thawed: list[str] = []

    async def thaw_via(r: HoldRecord) -> None:
        thawed.append(r.token)

    (settled,) = await keeping.settle(thaw_via)
    assert thawed == ["remote"] and settled == Settled("hv1/remote", "thawed", "")
    assert journal.load() == ([], [])
    assert links and all(link.closed for link in links)
    assert settings_seen and all(isinstance(s, Settings) for s in settings_seen)
    assert settings_seen[0] == Settings()


async def test_a_moved_deadline_that_cannot_be_written_leaves_the_earlier_one(
    keeping: HoldKeeping,
    journal: HoldJournal,
    local_starts: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The freeze goes on: a keeper reading the earlier deadline thaws early, never late."""
    h = hold(time.time() + 60)
    await keeping.arm(h, REACH, FakeLink(None), 60)  # type: ignore[arg-type]
    (before,), _problems = journal.load()

    def disk_full(record: HoldRecord) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "write", disk_full)
    assert h.deadline is not None
    h.deadline += 5
    await keeping.moved(h)  # does not raise
    assert journal.load()[0] == [before]
    keeping.released(h, "thawed")


async def test_while_a_hypervisor_keeper_is_armed_the_journal_says_pending(
    keeping: HoldKeeping, journal: HoldJournal, local_starts: list[Any]
) -> None:
    """Killed mid-arm, the next start must ask that hypervisor's keeper (a "pending"
    record), not take the hold for the local keeper's."""
    seen: list[str] = []

    class Watching(FakeKeeper):
        async def arm(self, address: str, token: str, seconds: float, timeout: float) -> str:
            seen.extend(r.keeper for r in journal.load()[0])
            return await super().arm(address, token, seconds, timeout)

    await keeping.arm(hold(), REACH, FakeLink(Watching("nohup")), 30)  # type: ignore[arg-type]
    assert seen == ["pending"]
    assert [r.keeper for r in journal.load()[0]] == ["nohup"]


async def test_a_moved_deadline_of_a_hold_without_keeper_is_written_too(
    keeping: HoldKeeping, journal: HoldJournal, local_starts: list[Any]
) -> None:
    """No keeper could be armed: the journal is all a later start has, so it must carry
    the deadline that holds."""
    link = FakeLink(FakeKeeper(fail="hv1: no sudo"))
    h = hold(time.time() + 60)
    await keeping.arm(h, REACH, link, 60)  # type: ignore[arg-type]
    assert h.deadline is not None
    h.deadline += 5
    await keeping.moved(h)
    (record,), _problems = journal.load()
    assert (record.keeper, record.deadline) == (NO_KEEPER, h.deadline)
