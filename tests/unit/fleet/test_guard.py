"""The FreezeGuard on its own: deadlines, retries, dismissal, thaw_all racing its timers.

No agent: the thaw function is a coroutine that records calls and answers as told, so
every ordering is exercised in milliseconds. (The engine, the CLI and real guests are
tested in tests/integration and tests/guests.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from qgadash.fleet import guard as guard_module
from qgadash.fleet.guard import FreezeGuard, GuardClosed, Hold
from qgadash.fleet.model import ActionResult, VmRef
from qgadash.fleet.store import FleetStore

IDS = [f"hv/vm{i}" for i in range(10)]


class Thawer:
    """A thaw function: answers from `plan` (True, False) per call, releases on success."""

    def __init__(
        self, delay: float = 0.0, fail_first: int = 0, stagger: float = 0.0, cleanup: float = 0.0
    ) -> None:
        self.delay = delay
        self.stagger = stagger  # VM i answers i * stagger later: thaws end one by one
        self.cleanup = cleanup  # a cancelled thaw takes this long to let go (closes its channel)
        self.fail_first = fail_first
        self.calls: list[tuple[str, str, float]] = []
        self.guard: FreezeGuard | None = None

    async def __call__(self, vm_id: str, reason: str) -> ActionResult:
        self.calls.append((vm_id, reason, time.monotonic()))
        try:
            await asyncio.sleep(self.delay + self.stagger * IDS.index(vm_id))
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(self.cleanup))
            raise
        if sum(1 for c in self.calls if c[0] == vm_id) <= self.fail_first:
            return ActionResult(vm_id, False, None, "link down")
        assert self.guard is not None
        self.guard.release(vm_id)  # as the engine's thaw does
        return ActionResult(vm_id, True, 1, None)

    def count(self, vm_id: str) -> int:
        return sum(1 for c in self.calls if c[0] == vm_id)


def make_guard(
    thawer: Thawer,
    on_release: Callable[[Hold, str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[FreezeGuard, FleetStore]:
    store = FleetStore()
    for vm_id in IDS:
        hv, name = vm_id.split("/")
        store.add(VmRef(hv, name, f"/run/{name}.sock"))
    guard = FreezeGuard(store, thawer, clock=clock, on_release=on_release)
    thawer.guard = guard
    return guard, store


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.01, 0.02, 0.04))


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.005)


async def test_thaw_runs_at_the_deadline_for_every_hold() -> None:
    thawer = Thawer()
    guard, store = make_guard(thawer)
    for vm_id in IDS:
        guard.record(vm_id, 0.05)
    assert set(guard.owed()) == set(IDS)
    await asyncio.wait_for(guard.settled(), 2)
    assert sorted(c[0] for c in thawer.calls) == sorted(IDS)
    assert all(c[1] == "deadline" for c in thawer.calls)
    assert guard.owned() == []
    assert all(s.thaw_deadline is None for s in store.snapshots())
    assert all(s.thaw_error is None for s in store.snapshots())  # nothing failed


async def test_thaw_all_while_deadline_timers_release_holds() -> None:
    """The crash of issue 11: the deadline timers released holds while thaw_all walked
    them (KeyError), and the rest stayed frozen."""
    thawer = Thawer(delay=0.01, stagger=0.01, cleanup=0.05)
    guard, _ = make_guard(thawer)
    for vm_id in IDS:
        guard.record(vm_id, 0.0)
    await wait_until(lambda: len(thawer.calls) == len(IDS), "every deadline thaw started")
    results = await guard.thaw_all("signal SIGTERM")
    assert guard.owned() == []
    # Every VM was thawed once: by its timer, or (the timer being cancelled mid-way) by
    # thaw_all; none was forgotten.
    assert all(thawer.count(vm_id) >= 1 for vm_id in IDS)
    assert all(r.ok for r in results)


async def test_thaw_all_thaws_every_hold_timed_or_not_and_reports_each() -> None:
    thawer = Thawer()
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], 600)
    guard.record(IDS[1], None)  # "thaw after 0 (never)": still ours on quit
    assert guard.owed() == [IDS[0]]
    assert set(guard.owned()) == {IDS[0], IDS[1]}
    results = await guard.thaw_all("quit")
    assert {r.vm_id for r in results} == {IDS[0], IDS[1]}
    assert all(r.ok for r in results)
    assert {c[1] for c in thawer.calls} == {"quit"}
    assert guard.owned() == []


async def test_a_freeze_after_thaw_all_began_is_refused() -> None:
    thawer = Thawer(delay=0.05)
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], 600)
    stopping = asyncio.create_task(guard.thaw_all("quit"))
    await asyncio.sleep(0)
    with pytest.raises(GuardClosed, match="stopping and thawing: no new freeze"):
        guard.record(IDS[1], 600)
    await stopping
    assert guard.owned() == []


@pytest.mark.usefixtures("fast_retries")
async def test_a_failed_deadline_thaw_is_retried_with_backoff_and_shown() -> None:
    thawer = Thawer(fail_first=2)
    guard, store = make_guard(thawer)
    guard.record(IDS[0], 0.0)
    await wait_until(lambda: thawer.count(IDS[0]) == 2, "two failed attempts")
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_error == "thaw failed: link down"
    hold = guard.hold(IDS[0])
    assert hold is not None and hold.failures >= 1
    await asyncio.wait_for(guard.settled(), 2)
    times = [c[2] for c in thawer.calls]
    assert thawer.count(IDS[0]) == 3
    assert [c[1] for c in thawer.calls] == ["deadline", "deadline, retry", "deadline, retry"]
    assert times[1] - times[0] >= 0.01 and times[2] - times[1] >= 0.02  # backoff grows
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_error is None and snap.thaw_deadline is None


@pytest.mark.usefixtures("fast_retries")
async def test_dismiss_ends_a_failing_hold_and_its_retries() -> None:
    released: list[tuple[str, str]] = []
    thawer = Thawer(fail_first=1000)
    guard, store = make_guard(thawer, lambda hold, why: released.append((hold.vm_id, why)))
    guard.record(IDS[0], 0.0)
    await wait_until(lambda: thawer.count(IDS[0]) >= 2, "retrying")
    guard.dismiss(IDS[0])
    calls = thawer.count(IDS[0])
    await asyncio.sleep(0.1)  # several retry periods: none may happen now
    assert thawer.count(IDS[0]) == calls
    assert guard.owned() == []
    assert released == [(IDS[0], "dismissed")]
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_error is None
    await asyncio.wait_for(guard.settled(), 1)


@pytest.mark.usefixtures("fast_retries")
async def test_thaw_all_retries_failures_within_its_budget_and_reports_the_last() -> None:
    thawer = Thawer(fail_first=2)
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], 600)
    guard.record(IDS[1], 600)
    results = await guard.thaw_all("signal SIGHUP", budget=5)
    assert all(r.ok for r in results) and len(results) == 2
    assert thawer.count(IDS[0]) == 3
    assert {c[1] for c in thawer.calls} == {"signal SIGHUP", "signal SIGHUP, retry"}


async def test_thaw_all_without_budget_tries_once_and_reports_failure() -> None:
    thawer = Thawer(fail_first=1000)
    guard, store = make_guard(thawer)
    guard.record(IDS[0], 600)
    (result,) = await guard.thaw_all("quit")
    assert result.ok is False and result.vm_id == IDS[0]
    assert guard.owned() == [IDS[0]]  # still owed: the caller must say so
    assert thawer.count(IDS[0]) == 1  # no budget: no second try
    # The failure is on the hold and in the store, for the screen that says so.
    hold = guard.hold(IDS[0])
    assert hold is not None and hold.failures == 1 and hold.error == "thaw failed: link down"
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_error == "thaw failed: link down"


async def test_settled_waits_for_timed_holds_only() -> None:
    thawer = Thawer()
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], None)
    await asyncio.wait_for(guard.settled(), 0.5)  # nothing timed: settled at once
    guard.record(IDS[1], 0.05)
    waiting = asyncio.create_task(guard.settled())
    await asyncio.sleep(0)
    assert not waiting.done()
    await asyncio.wait_for(waiting, 2)
    assert guard.owned() == [IDS[0]]


async def test_each_hold_is_released_once_with_its_reason() -> None:
    released: list[tuple[str, str]] = []
    thawer = Thawer()
    guard, _ = make_guard(thawer, lambda hold, why: released.append((hold.vm_id, why)))
    first = guard.record(IDS[0], 600, token="a1", keeper="local")
    guard.record(IDS[0], 600, token="b2", keeper="local")  # a second freeze replaces it
    guard.release(IDS[0], "thawed by someone else")
    guard.release(IDS[0], "thawed by someone else")  # a no-op now
    assert released == [(IDS[0], "superseded"), (IDS[0], "thawed by someone else")]
    assert first.timer is not None
    await asyncio.sleep(0)
    assert first.timer.cancelled()  # the replaced hold's deadline can no longer fire


async def test_retry_now_thaws_an_overdue_hold_when_the_link_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thawer = Thawer(fail_first=1)
    guard, _ = make_guard(thawer)
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (60.0,))  # only retry_now can help
    guard.record(IDS[0], 0.0)
    await wait_until(lambda: thawer.count(IDS[0]) == 1, "the failed deadline thaw")
    await guard.retry_now(IDS[0])
    await asyncio.wait_for(guard.settled(), 2)
    assert thawer.count(IDS[0]) == 2
    assert thawer.calls[1][1] == "deadline, retry"


async def test_retry_now_leaves_a_hold_whose_deadline_is_ahead() -> None:
    thawer = Thawer()
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], 600)
    await guard.retry_now(IDS[0])
    await asyncio.sleep(0.02)
    assert thawer.calls == []
    assert guard.next_deadline() == guard.deadline(IDS[0])


async def test_settled_waits_for_the_deadline_task_to_finish_its_record() -> None:
    """The CLI exits once settled: a deadline thaw's audit record, written after its
    release, must not be cut off (seen: two of four 'thaw (deadline)' lines lost)."""
    recorded: list[str] = []
    thawer = Thawer()
    guard, _ = make_guard(thawer)

    async def thaw_then_record(vm_id: str, reason: str) -> ActionResult:
        result = await thawer(vm_id, reason)  # releases the hold
        await asyncio.sleep(0.05)  # the engine writes its audit record after that
        recorded.append(vm_id)
        return result

    guard._thaw = thaw_then_record
    for vm_id in IDS[:4]:
        guard.record(vm_id, 0.0)
    await asyncio.wait_for(guard.settled(), 2)
    assert sorted(recorded) == IDS[:4]


async def test_a_provisional_deadline_waits_for_the_freeze_to_go_out() -> None:
    """Arming a keeper may take longer than a short deadline: the deadline counts from
    start_deadline (the freeze about to be sent), never from before it."""
    thawer = Thawer()
    guard, store = make_guard(thawer)
    guard.record(IDS[0], 0.01, start=False)
    await asyncio.sleep(0.05)  # past the provisional deadline: nothing may fire
    assert thawer.calls == []
    deadline = guard.start_deadline(IDS[0], 0.02)
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_deadline == deadline
    await asyncio.wait_for(guard.settled(), 2)
    assert [c[0] for c in thawer.calls] == [IDS[0]]
    assert guard.start_deadline(IDS[0], 1.0) is None  # the hold has ended


async def test_reading_an_unheld_vm_or_an_empty_guard_gives_no_deadline() -> None:
    thawer = Thawer()
    guard, _ = make_guard(thawer)
    assert guard.deadline(IDS[0]) is None
    assert guard.next_deadline() is None
    guard.record(IDS[0], None)  # held, but untimed
    assert guard.deadline(IDS[0]) is None
    assert guard.next_deadline() is None
    guard.record(IDS[1], 600)
    guard.record(IDS[2], 300)
    assert guard.next_deadline() == guard.deadline(IDS[2])
    await guard.thaw_all()


async def test_start_deadline_counts_the_deadline_forward_from_now() -> None:
    now = [1000.0]
    thawer = Thawer()
    store = FleetStore()
    store.add(VmRef("hv", "vm0", "/run/vm0.sock"))
    guard = FreezeGuard(store, thawer, clock=lambda: now[0])
    thawer.guard = guard
    guard.record(IDS[0], 5, start=False)
    now[0] = 1010.0  # arming the keeper took a while
    assert guard.start_deadline(IDS[0], 600) == 1610.0
    assert guard.deadline(IDS[0]) == 1610.0
    await asyncio.sleep(0.02)
    assert thawer.calls == []  # 600 s ahead: nothing fires
    await guard.thaw_all()


async def test_the_deadline_and_retry_tasks_are_named_after_their_vm() -> None:
    """A task dump of a stuck qgadash (asyncio debug, py-spy) says which VM each
    deadline timer or retry belongs to."""
    thawer = Thawer(fail_first=1)
    guard, _ = make_guard(thawer)
    hold = guard.record(IDS[0], 600)
    assert hold.timer is not None and hold.timer.get_name() == f"thaw-deadline:{IDS[0]}"
    guard.record(IDS[1], 1, start=False)
    guard.start_deadline(IDS[1], 600)
    later = guard.hold(IDS[1])
    assert later is not None and later.timer is not None
    assert later.timer.get_name() == f"thaw-deadline:{IDS[1]}"
    await guard.thaw_all()


@pytest.mark.usefixtures("fast_retries")
async def test_each_failed_thaw_counts_one_attempt_and_is_logged_with_its_vm_and_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    thawer = Thawer(fail_first=2)
    guard, _ = make_guard(thawer)
    attempts: list[int] = []
    real_failed = guard._failed

    def failed(hold: Hold, result: ActionResult) -> None:
        real_failed(hold, result)
        attempts.append(hold.failures)

    guard._failed = failed  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="qgadash.fleet.guard"):
        guard.record(IDS[0], 0.0)
        await asyncio.wait_for(guard.settled(), 2)
    assert attempts == [1, 2]
    assert [r.getMessage() for r in caplog.records] == [
        f"{IDS[0]}: thaw failed (attempt 1): link down",
        f"{IDS[0]}: thaw failed (attempt 2): link down",
    ]


async def test_retry_now_of_an_unheld_or_untimed_vm_does_nothing() -> None:
    thawer = Thawer()
    guard, _ = make_guard(thawer)
    await guard.retry_now(IDS[0])  # never held
    guard.record(IDS[1], None)
    await guard.retry_now(IDS[1])  # held, no deadline: only quit thaws it
    await asyncio.sleep(0.02)
    assert thawer.calls == []
    await guard.thaw_all()


async def test_retry_now_thaws_a_hold_whose_deadline_is_this_instant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (60.0,))  # only retry_now can help
    thawer = Thawer(fail_first=1)
    store = FleetStore()
    store.add(VmRef("hv", "vm0", "/run/vm0.sock"))
    guard = FreezeGuard(store, thawer, clock=lambda: 1000.0)  # time stands still
    thawer.guard = guard
    guard.record(IDS[0], 0.0)  # due now, not later
    await wait_until(lambda: thawer.count(IDS[0]) == 1, "the failed deadline thaw")
    await guard.retry_now(IDS[0])
    hold = guard.hold(IDS[0])
    retry = hold.timer if hold else None
    await asyncio.wait_for(guard.settled(), 2)
    assert thawer.count(IDS[0]) == 2
    assert retry is not None and retry.get_name() == f"thaw-retry:{IDS[0]}"


async def test_a_failed_thaw_whose_path_ended_the_hold_is_not_shown_or_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The thaw path itself may end the hold and still fail (the engine found the guest
    rebooted, so nothing is frozen, but the thaw request errored): nothing is owed, so
    the failure is neither shown nor retried."""
    calls: list[str] = []

    async def thaw(vm_id: str, reason: str) -> ActionResult:
        calls.append(reason)
        guard.release(vm_id, "guest rebooted")
        return ActionResult(vm_id, False, None, "link down")

    store = FleetStore()
    store.add(VmRef("hv", "vm0", "/run/vm0.sock"))
    guard = FreezeGuard(store, thaw)
    with caplog.at_level("WARNING", logger="qgadash.fleet.guard"):
        guard.record(IDS[0], 0.0)
        await asyncio.wait_for(guard.settled(), 2)
    snap = store.get(IDS[0])
    assert snap is not None and snap.thaw_error is None
    assert caplog.records == [] and calls == ["deadline"]


class SleepLog:
    """asyncio.sleep, recording each delay and not waiting: what the guard waits for,
    exactly, in no time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.delays: list[float] = []
        self._sleep = asyncio.sleep
        monkeypatch.setattr(asyncio, "sleep", self)  # the module the guard calls it from

    async def __call__(self, delay: float, result: object = None) -> object:
        if delay:  # the Thawer's own zero-delay yields are not the guard's waits
            self.delays.append(delay)
        await self._sleep(0)
        return result


async def test_a_hold_shows_its_deadline_clears_an_old_error_and_keeps_token_and_keeper() -> None:
    guard, store = make_guard(Thawer(), clock=lambda: 1000.0)
    store.update(IDS[0], thaw_error="thaw failed: an earlier hold's")
    guard.record(IDS[0], 600, token="t1", keeper="local", start=False)
    guard.record(IDS[1], None)
    first, second = store.get(IDS[0]), store.get(IDS[1])
    assert first is not None and (first.thaw_deadline, first.thaw_error) == (1600.0, None)
    assert second is not None and second.thaw_deadline is None
    held = {h.vm_id: (h.deadline, h.token, h.keeper) for h in guard.holds()}
    assert held == {IDS[0]: (1600.0, "t1", "local"), IDS[1]: (None, "", "none")}


async def test_the_deadline_timer_waits_exactly_until_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a second more: an overdue deadline (a provisional one started late, a clock
    step) thaws at once."""
    sleeps = SleepLog(monkeypatch)
    thawer = Thawer()
    guard, _ = make_guard(thawer, clock=lambda: 1000.0)
    guard.record(IDS[0], 30)
    guard.record(IDS[1], 0)
    await guard.settled()
    assert sorted(c[0] for c in thawer.calls) == [IDS[0], IDS[1]]
    assert sleeps.delays == [30.0]  # IDS[1]'s wait was 0: no sleep at all


async def test_thaw_all_backs_off_by_each_retry_delay_in_turn_then_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "RETRY_DELAYS", (0.011, 0.012, 0.013))
    sleeps = SleepLog(monkeypatch)
    thawer = Thawer(fail_first=4)
    guard, _ = make_guard(thawer)
    guard.record(IDS[0], 600)
    (result,) = await guard.thaw_all("quit", budget=60)
    assert result.ok and thawer.count(IDS[0]) == 5
    assert sleeps.delays == [0.011, 0.012, 0.013, 0.013]
