"""The fleet engine: inventory, sessions, polling, actions, the freeze guard.

The dashboard, the CLI and the tests all drive this one object. It never imports a
UI; it writes what agents say into the `FleetStore` and runs actions on request.

Over 500 lines: it is the one object the front ends drive, and its parts (discovery
and inventory, the poll loops, the actions, the freeze paths around the guard) share
the sessions and the store. The freeze safety, files, polling and sessions already
live in their own modules; discovery and the actions are the next seams to cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller, NoReplyOutcome
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentTimeout,
)
from qgadash.agent.policy import changes_guest, command_policy
from qgadash.fleet.actions import (
    SUSPEND_ACTIONS,
    Action,
    ActionPlan,
    ReadOnlyError,
    freeze_deadline,
    make_plan,
)
from qgadash.fleet.admin import GuestAdmin
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Config, HypervisorConfig, Settings
from qgadash.fleet.files import GuestFiles, run_exec
from qgadash.fleet.guard import FreezeGuard, GuardClosed, Hold
from qgadash.fleet.holds import HoldJournal, HoldRecord, Reach
from qgadash.fleet.keeper import thaw_record
from qgadash.fleet.keeping import HoldKeeping, Settled
from qgadash.fleet.lifecycle import after_poll, power_action, with_manager_state
from qgadash.fleet.limit import InFlightLimit
from qgadash.fleet.links import make_link
from qgadash.fleet.model import (
    ActionResult,
    AgentState,
    FreezeState,
    HypervisorStatus,
    Lifecycle,
    SessionMode,
    VmRef,
)
from qgadash.fleet.polling import PollCache, PollOutcome, PollPlan, failed_outcome, poll_with
from qgadash.fleet.polling.slots import poll_slot
from qgadash.fleet.sanitize import one_line
from qgadash.fleet.session import VmSession
from qgadash.fleet.store import FleetStore
from qgadash.transport.base import HypervisorLink, HypervisorState, ManagedHypervisor
from qgadash.transport.discovery import is_proxmox_socket
from qgadash.transport.local import LocalHypervisor

__all__ = ["Action", "ActionPlan", "FleetEngine", "ReadOnlyError", "make_link"]

T = TypeVar("T")

log = logging.getLogger(__name__)


class KeeperNotSent(AgentConnectionError):
    """A freeze refused before it went out (qgadash is stopping)."""

    request_sent = False


ProgressCallback = Callable[[ActionResult], None]
LOCAL_HYPERVISOR = "local"
REDISCOVER_EVERY = 6  # polls between two discoveries of a hypervisor's agents
NO_REPLY_GRACE = 3.0  # seconds an error to shutdown/suspend may take to come back
SHUTDOWN_MODES = ("powerdown", "halt", "reboot")


class FleetEngine:
    def __init__(
        self,
        config: Config,
        *,
        audit: AuditLog | None = None,
        poll_plan: PollPlan | None = None,
        links: dict[str, HypervisorLink] | None = None,
        clock: Callable[[], float] = time.time,
        journal: HoldJournal | None = None,
        after_discovery: Callable[[], None] | None = None,
    ) -> None:
        """`journal`: where holds are made durable and local keepers find them; None
        (tests, benchmarks) keeps holds in this process only, with no keeper.
        `after_discovery`: called once, when the first discovery has built the inventory;
        the entry points pass `qgadash.fleet.tuning.settle_garbage_collector` (process
        tuning is theirs to choose, not the engine's: a test process is left alone)."""
        self.config = config
        self.store = FleetStore()
        self.audit = audit
        self.keeping = HoldKeeping(journal, audit)
        self.settled: list[Settled] = []  # what the last settle_journal did
        self.poll_plan = poll_plan or PollPlan()
        self._clock = clock
        self._after_discovery = after_discovery
        self._links: dict[str, HypervisorLink] = dict(links or {})
        self._watched: set[str] = set()  # hypervisors whose domain states we listen to
        for hv in config.hypervisors:
            if hv.name not in self._links:
                self._links[hv.name] = make_link(hv, config.settings)
        if any(vm.hypervisor == LOCAL_HYPERVISOR for vm in config.vms):
            self._links.setdefault(
                LOCAL_HYPERVISOR, LocalHypervisor(LOCAL_HYPERVISOR, config.settings.max_reply_bytes)
            )
        # The links whose manager knows domain states, found once: isinstance() against a
        # runtime-checkable Protocol costs ~20 µs, too much for every poll of every VM.
        self._managers: dict[str, ManagedHypervisor] = {
            name: link for name, link in self._links.items() if isinstance(link, ManagedHypervisor)
        }
        self._sessions: dict[str, VmSession] = {}
        self._poll_numbers: dict[str, int] = {}
        self._poll_cache = PollCache()  # every poll's memory (fleet/polling/cache.py)
        self._action_epochs: dict[str, int] = {}
        # VMs whose freeze is on its way (hold taken, keeper arming, request in flight):
        # a poll's "thawed" is the state before it, not someone else's thaw.
        self._freezing: dict[str, int] = {}
        self._in_flight = InFlightLimit(config.settings.max_in_flight)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._discovery_tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._initial_discovery_done: asyncio.Future[None] | None = None
        self.guard = FreezeGuard(self.store, self._guard_thaw, clock, self.keeping.released)
        self.files = GuestFiles(self)
        self.admin = GuestAdmin(self, clock)

    @property
    def settings(self) -> Settings:
        return self.config.settings

    def session(self, vm_id: str) -> VmSession | None:
        return self._sessions.get(vm_id)

    # -- inventory --------------------------------------------------------------------

    def _session_mode(self, hv: HypervisorConfig | None, address: str) -> SessionMode:
        if hv is not None and hv.via == "libvirt":
            return SessionMode.HELD  # libvirtd owns the socket; our client is shared anyway
        if hv is not None and hv.session is not None:
            return hv.session
        if is_proxmox_socket(address):
            return SessionMode.PER_POLL
        return SessionMode.PER_POLL

    async def discover(self, hypervisors: Collection[str] | None = None) -> None:
        """Find every hypervisor's agents (or only those of `hypervisors`); add new VMs,
        drop ones that are gone."""
        await asyncio.gather(
            *(
                self._discover_hypervisor(hv)
                for hv in self.config.hypervisors
                if hypervisors is None or hv.name in hypervisors
            )
        )
        self._add_configured_vms()
        if LOCAL_HYPERVISOR in self._links and self.config.hypervisor(LOCAL_HYPERVISOR) is None:
            self._publish_hypervisor(LOCAL_HYPERVISOR)

    def _add_configured_vms(self) -> None:
        for vm in self.config.vms:
            link = self._links[vm.hypervisor]
            hv = self.config.hypervisor(vm.hypervisor)
            tags = tuple(dict.fromkeys((*(hv.tags if hv else ()), *vm.tags)))
            mode = vm.session or self._session_mode(hv, vm.agent)
            self._add_vm(VmRef(vm.hypervisor, vm.name, vm.agent, tags, mode), link)

    async def _discover_hypervisor(self, hv: HypervisorConfig) -> None:
        link = self._links[hv.name]
        try:
            found = await link.discover(list(hv.agents))
        except (AgentError, OSError) as exc:
            self._publish_hypervisor(hv.name, error=one_line(str(exc)))
            return
        if isinstance(link, ManagedHypervisor) and hv.name not in self._watched:
            self._watched.add(hv.name)
            link.on_domain_state(lambda address, state: self._domain_state(hv.name, address, state))
        seen: dict[str, str] = {}  # vm id -> the address that got it
        clashes: list[str] = []
        explicit = {f"{vm.hypervisor}/{vm.name}" for vm in self.config.vms}
        for agent in found:
            ref = VmRef(
                hv.name, agent.name, agent.address, hv.tags, self._session_mode(hv, agent.address)
            )
            if ref.id in seen:
                # Never silently: two sockets, one name; the first keeps it.
                clashes.append(f"{agent.address} (also named {agent.name}, as {seen[ref.id]})")
                continue
            seen[ref.id] = agent.address
            self._add_vm(ref, link)
        for vm_id in [i for i in self._sessions if i.startswith(hv.name + "/")]:
            if vm_id not in seen and vm_id not in explicit and vm_id not in self.guard.owned():
                snap = self.store.get(vm_id)
                if snap is None or snap.lifecycle is None:  # shut down from here: keep its row
                    await self._remove_vm(vm_id)
        error = None
        if clashes:
            error = one_line(
                f"{len(clashes)} agent sockets not polled, their VM name is taken: "
                + "; ".join(clashes[:3])
                + " (give them [[vm]] entries)"
            )
        self._publish_hypervisor(hv.name, error=error)

    def _domain_state(self, hypervisor: str, address: str, state: str) -> None:
        """The manager says a domain changed state: its row says so now, not at the next
        poll."""
        for session in list(self._sessions.values()):
            ref = session.ref
            if ref.hypervisor == hypervisor and ref.address == address:
                snap = self.store.get(ref.id)
                if snap is not None:
                    link = self._managers.get(hypervisor)
                    manager = link.manager if link is not None else "libvirt"
                    self.store.put(with_manager_state(snap, state, manager))

    def _publish_hypervisor(self, name: str, error: str | None = None) -> None:
        link = self._links[name]
        count = sum(1 for vm_id in self._sessions if vm_id.startswith(name + "/"))
        self.store.set_hypervisor(HypervisorStatus(name, link.state, error or link.error, count))

    def _add_vm(self, ref: VmRef, link: HypervisorLink) -> None:
        existing = self._sessions.get(ref.id)
        if existing is not None and existing.ref == ref:
            return
        session = self._sessions[ref.id] = VmSession(ref, link.endpoint(ref.address))
        session.on_note = partial(self.store.set_note, ref.id)
        self._poll_numbers.setdefault(ref.id, 0)
        self.store.add(ref)
        if self._running and ref.id not in self._tasks:
            self._start_polling(ref.id, stagger=True)

    async def _remove_vm(self, vm_id: str) -> None:
        task = self._tasks.pop(vm_id, None)
        if task is not None:
            task.cancel()
        session = self._sessions.pop(vm_id, None)
        self._poll_cache.forget(vm_id)
        if session is not None:
            await session.close()
        self.store.remove(vm_id)

    # -- polling -------------------------------------------------------------------------

    def poll_stats(self, *, cpu: bool, disks: bool) -> None:
        """Ask every VM's CPU / disk counters on each poll from now on, or stop (the
        dashboard's optional CPU % and DISK I/O columns: each costs a request per poll
        of every VM, so only while shown)."""
        plan = self.poll_plan.with_stats(cpu=cpu, disks=disks)
        if plan != self.poll_plan:  # the same plan object keeps the command lists cached
            self.poll_plan = plan

    async def poll_once(self) -> None:
        """Discover, then poll every VM once (the CLI's `status`)."""
        await self.discover()
        await self.poll_vms(list(self._sessions))

    async def poll_vms(self, vm_ids: Collection[str]) -> None:
        """Poll these VMs once, no others (a selection never waits for the rest)."""
        await asyncio.gather(*(self.poll_vm(vm_id) for vm_id in vm_ids))
        for name in self._links:
            self._publish_hypervisor(name)

    async def poll_vm(self, vm_id: str) -> None:
        session = self._sessions.get(vm_id)
        snap = self.store.get(vm_id)
        if session is None or snap is None:
            return
        epoch = self._action_epochs.get(vm_id, 0)
        timeout = self.settings.timeout
        was_failing = snap.agent is not AgentState.OK

        def work(caller: AgentCaller) -> Coroutine[Any, Any, PollOutcome]:
            # Read under the session's lock: the facts the reply cache vouches for are the
            # ones the last poll of this VM stored, not a copy taken before waiting. (The
            # coroutine itself is handed back, one await less on every resumption.)
            current = self.store.get(vm_id) or snap
            number = self._poll_numbers.get(vm_id, 0)
            self._poll_numbers[vm_id] = number + 1
            return poll_with(
                caller, current, self.poll_plan, number, timeout, self._poll_cache, self._clock
            )

        async with self._in_flight:
            try:
                outcome = await session.run(work, connect_timeout=timeout)
            except AgentError as exc:
                outcome = failed_outcome(self.store.get(vm_id) or snap, exc, self._clock)
        current = self.store.get(vm_id)
        if current is None:
            return
        if self._action_epochs.get(vm_id, 0) != epoch:
            # An action changed the freeze state while we polled: trust the action.
            outcome = dataclasses.replace(outcome, freeze=current.freeze)
        elif (
            outcome.agent is AgentState.OK
            and outcome.freeze is FreezeState.THAWED
            and vm_id in self.guard.owned()
            and vm_id not in self._freezing
        ):
            # Someone thawed it: nothing owed. Only an answered poll says so: a failed one
            # carries the last known state, which after a freeze whose outcome is unknown
            # is the "thawed" from before it.
            self.guard.release(vm_id, "thawed by someone else")
            current = self.store.get(vm_id) or current
        if (
            outcome.agent is AgentState.OK
            and current.facts.info is not None  # not the first poll: that one read it anyway
            and outcome.freeze is not FreezeState.UNKNOWN
            and outcome.freeze is not current.freeze
        ):
            self._reread_info(vm_id)  # frozen or thawed since we last knew: capabilities change
        polled = after_poll(outcome.applied_to(current), current.lifecycle, self._clock())
        manager = self._managers.get(polled.ref.hypervisor)
        if manager is not None:
            polled = with_manager_state(
                polled, manager.domain_state(polled.ref.address), manager.manager
            )
        self.store.put(polled)
        if outcome.nic_samples:
            self.store.record_nic_counters(vm_id, outcome.nic_samples)
        if was_failing and outcome.agent is AgentState.OK and vm_id in self.guard.owned():
            await self.guard.retry_now(vm_id)

    async def __aenter__(self) -> FleetEngine:
        """`async with FleetEngine(config) as engine:` starts it, and stops it (every
        hold thawed, sessions closed) however the block ends."""
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Discover, then poll every VM on its interval in the background.

        Each hypervisor's VMs start polling as soon as its own discovery is done, so a
        hung hypervisor never holds up the others; `start` returns once discovery is
        done or after `timeout`, whichever comes first.
        """
        if self._running:
            return
        self._running = True
        self._add_configured_vms()  # [[vm]] entries need no discovery: they poll at once
        for vm_id in list(self._sessions):  # and so do VMs an earlier discovery found
            self._start_polling(vm_id, stagger=True)
        loop = asyncio.get_running_loop()
        done = self._initial_discovery_done = loop.create_future()
        self._discovery_tasks.append(loop.create_task(self._discover_and_watch()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), self.settings.timeout)

    async def _discover_and_watch(self) -> None:
        await asyncio.gather(*(self._discover_hypervisor(hv) for hv in self.config.hypervisors))
        if LOCAL_HYPERVISOR in self._links and self.config.hypervisor(LOCAL_HYPERVISOR) is None:
            self._publish_hypervisor(LOCAL_HYPERVISOR)
        if self._initial_discovery_done is not None and not self._initial_discovery_done.done():
            self._initial_discovery_done.set_result(None)
        if self._after_discovery is not None:
            self._after_discovery()
        await asyncio.gather(*(self._rediscover_loop(hv) for hv in self.config.hypervisors))

    def _start_polling(self, vm_id: str, stagger: bool) -> None:
        task = self._tasks.get(vm_id)
        if task is not None and not task.done():
            return  # one poll loop per VM, ever: two would race on its reply cache
        self._tasks[vm_id] = asyncio.get_running_loop().create_task(
            self._poll_loop(vm_id, stagger), name=f"poll:{vm_id}"
        )

    async def _poll_loop(self, vm_id: str, stagger: bool) -> None:
        interval = self.settings.poll_interval
        if stagger:
            # First polls within a second: a fast first paint.
            await asyncio.sleep(random.uniform(0, min(interval, 1.0)))
        loop = asyncio.get_running_loop()
        # After the first poll, each VM keeps its own phase, spread over the whole interval,
        # so a large fleet is a steady trickle of polls instead of a storm every interval.
        phase = random.uniform(0.0, interval)
        first = True
        while True:
            started = loop.time()
            try:
                await self.poll_vm(vm_id)
            except Exception as exc:  # a bug must cost one poll of one VM, not its polling
                log.exception("%s: internal error in a poll", vm_id)
                self.store.update(
                    vm_id, agent=AgentState.ERROR, error=one_line(f"internal error: {exc!r}")
                )
            session = self._sessions.get(vm_id)
            failures = session.failures if session else 0
            # Degrade by stretching: a failing VM waits longer, never piles up work.
            delay = interval * min(1.0 + failures / 2, 3.0)
            if first:
                delay = phase + interval / 2
                first = False
            wake = poll_slot(started + delay, interval)  # ten polls to a wake-up
            await asyncio.sleep(max(0.0, wake - loop.time()))

    async def _rediscover_loop(self, hv: HypervisorConfig) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval * REDISCOVER_EVERY)
            await self._discover_hypervisor(hv)

    async def stop(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        """Stop polling and thaw everything this process froze; the thaw results.

        `reason` names the thaws in the audit log ("quit", "signal SIGTERM"); failed
        thaws are retried for up to `budget` seconds. No freeze starts once this begins.
        """
        self._running = False
        tasks = [*self._tasks.values(), *self._discovery_tasks]
        self._tasks.clear()
        self._discovery_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        results = await self.guard.thaw_all(reason, budget)
        await self.keeping.drain()
        await asyncio.gather(*(s.close() for s in self._sessions.values()))
        await asyncio.gather(*(link.close() for link in self._links.values()))
        return results

    # -- agent access -----------------------------------------------------------------------

    async def with_agent(self, vm_id: str, work: Callable[[AgentCaller], Awaitable[T]]) -> T:
        """Run `work` on `vm_id`'s agent, serialised with its polls."""
        session = self._sessions.get(vm_id)
        if session is None:
            raise AgentConnectionError(f"{vm_id}: no such VM")
        return await session.run(work, connect_timeout=self.settings.timeout)

    # -- actions -----------------------------------------------------------------------------

    def frozen_by_us(self) -> list[str]:
        """Every VM this process froze and has not thawed, timed or not."""
        return self.guard.owned()

    def holds(self) -> list[Hold]:
        """The holds behind `frozen_by_us`: deadline (None: no automatic thaw), keeper
        kind, failures. Read-only: the guard owns them."""
        return self.guard.holds()

    def _link_of(self, vm_id: str) -> tuple[HypervisorLink, Reach]:
        session = self._sessions.get(vm_id)
        if session is None:
            raise AgentConnectionError(f"{vm_id}: no such VM")
        ref = session.ref
        link = self._links[ref.hypervisor]
        return link, Reach.of(self.config.hypervisor(ref.hypervisor), ref.hypervisor, ref.address)

    def is_local(self, vm_id: str) -> bool:
        """Whether this machine reaches the VM's agent directly (no hypervisor in between)."""
        session = self._sessions.get(vm_id)
        return session is not None and self._links[session.ref.hypervisor].keeper is None

    async def keepers(self, vm_ids: Sequence[str]) -> dict[str, str | None]:
        """For each VM: None if a keeper can be armed next to it, else why not (asked
        before a freeze is confirmed, so the operator knows)."""
        by_link: dict[str, list[str]] = {}
        for vm_id in vm_ids:
            session = self._sessions.get(vm_id)
            if session is not None:
                by_link.setdefault(session.ref.hypervisor, []).append(vm_id)
        names = list(by_link)
        answers = await asyncio.gather(
            *(self.keeping.keeper_for(self._links[name]) for name in names)
        )
        out: dict[str, str | None] = {}
        for name, why in zip(names, answers, strict=True):
            for vm_id in by_link[name]:
                out[vm_id] = why
        return out

    async def settle_journal(self) -> list[Settled]:
        """Thaw what an earlier qgadash (killed, crashed) still owed past its deadline."""
        self.settled = await self.keeping.settle(self._thaw_record)
        return self.settled

    async def _thaw_record(self, record: HoldRecord) -> None:
        session = self._sessions.get(record.vm_id)
        if session is not None and session.ref.address == record.reach.address:
            timeout = self.settings.action_timeout
            await self.with_agent(
                record.vm_id, lambda c: c.call("guest-fsfreeze-thaw", None, timeout=timeout)
            )
            self._bump(record.vm_id)
            self.store.update(record.vm_id, freeze=FreezeState.THAWED)
            self._reread_info(record.vm_id)
            return
        await thaw_record(record, self.settings.action_timeout)

    def plan(self, action: Action, vm_ids: Sequence[str]) -> ActionPlan:
        owned = set(self.guard.owned())
        return make_plan(action, ((i, self.store.get(i)) for i in vm_ids), owned)

    def dismiss_thaw_error(self, vm_id: str) -> None:
        self.guard.dismiss(vm_id)

    async def forget(self, vm_id: str) -> bool:
        """Remove the row of a VM this process shut down, suspended or rebooted (the
        operator is done with it); False if it has none. Discovery adds it again if its
        agent comes back."""
        snap = self.store.get(vm_id)
        if snap is None or snap.lifecycle is None:
            return False
        await self._remove_vm(vm_id)
        return True

    def _power_sent(self, vm_id: str, command: str, arguments: object) -> None:
        """A shutdown, reboot or suspend went out: the VM's row now expects silence."""
        action = power_action(command, arguments)
        if action is not None:
            self.store.update(vm_id, lifecycle=Lifecycle(action, self._clock()))

    def _check_writable(self) -> None:
        if self.settings.read_only:
            raise ReadOnlyError("read-only mode: actions are off (read_only or --read-only)")

    # For the verbs outside this module (fleet/admin.py): the same checks, bulk runner
    # and audit as the ones here.
    check_writable = _check_writable

    @property
    def action_timeout(self) -> float:
        return self.settings.action_timeout

    async def run_bulk(
        self,
        action: str,
        vm_ids: Sequence[str],
        arguments: Any,
        one: Callable[[str], Awaitable[Any]],
        progress: ProgressCallback | None,
    ) -> list[ActionResult]:
        return await self._bulk(action, vm_ids, arguments, one, progress)

    async def _bulk(
        self,
        action: str,
        vm_ids: Sequence[str],
        arguments: Any,
        one: Callable[[str], Awaitable[Any]],
        progress: ProgressCallback | None,
    ) -> list[ActionResult]:
        """Run `one` on every VM concurrently; one result per VM, in the order given."""

        async def run(vm_id: str) -> ActionResult:
            started = time.perf_counter()
            ok: bool | None
            try:
                async with self._in_flight:
                    value = await one(vm_id)
                ok, error = True, None
            except AgentError as exc:
                value = None
                # Sent, and no error reply from the agent (a timeout, a cut link, garbage or
                # a reply cut short): it may well have happened.
                unknown = exc.request_sent and not isinstance(exc, AgentCommandError)
                ok, error = (None if unknown else False), one_line(str(exc))
                if unknown:
                    error = f"outcome unknown: {error}"
            result = ActionResult(vm_id, ok, value, error, (time.perf_counter() - started) * 1000)
            if self.audit is not None:
                self.audit.record(action, vm_id, arguments, ok, error, result.elapsed_ms)
            if progress is not None:
                progress(result)
            return result

        return list(await asyncio.gather(*(run(vm_id) for vm_id in dict.fromkeys(vm_ids))))

    def _bump(self, vm_id: str) -> None:
        self._action_epochs[vm_id] = self._action_epochs.get(vm_id, 0) + 1

    def _reread_info(self, vm_id: str) -> None:
        """The next poll re-reads guest-info: a freeze or thaw changes what is enabled."""
        self._poll_numbers[vm_id] = 0

    async def freeze(
        self,
        vm_ids: Sequence[str],
        *,
        mountpoints: Sequence[str] | None = None,
        thaw_after: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """Freeze filesystems. Every freeze is held by the guard: thawed at `thaw_after`
        seconds (default: the settings'), or with 0 only on quit or signal. A timed hold
        is written to the journal and a keeper armed next to the guest before the freeze
        goes out; if that fails, the VM is not frozen."""
        self._check_writable()
        after = self.settings.thaw_after if thaw_after is None else thaw_after
        timeout = self.settings.action_timeout
        command = "guest-fsfreeze-freeze-list" if mountpoints else "guest-fsfreeze-freeze"
        args = {"mountpoints": list(mountpoints)} if mountpoints else None

        async def one(vm_id: str) -> int:
            self._freezing[vm_id] = self._freezing.get(vm_id, 0) + 1
            try:
                return await freeze_one(vm_id)
            finally:
                self._freezing[vm_id] -= 1
                if not self._freezing[vm_id]:
                    del self._freezing[vm_id]

        async def freeze_one(vm_id: str) -> int:
            link, reach = self._link_of(vm_id)
            vm_after = freeze_deadline(self.store.get(vm_id), after)  # Windows: VSS limit
            try:
                # Before the request: a lost reply still thaws.
                hold = self.guard.record(vm_id, vm_after if vm_after > 0 else None, start=False)
            except GuardClosed as exc:
                raise KeeperNotSent(str(exc)) from None
            if vm_after > 0:
                try:
                    await self.keeping.arm(hold, reach, link, vm_after)
                except AgentError:
                    self.guard.release(vm_id, "not frozen")
                    raise
            if self.guard.hold(vm_id) is not hold:
                # Ended while its keeper was armed (a stop thawed it, not yet frozen): a
                # freeze sent now would be owed by nobody. Undo what the arm left behind.
                self.keeping.released(hold, "not frozen")
                raise KeeperNotSent(f"{vm_id}: qgadash is stopping; not frozen")
            if vm_after > 0:
                # The deadline counts from the freeze, not from before its keeper was armed.
                self.guard.start_deadline(vm_id, vm_after)
                await self.keeping.moved(hold)
            self._bump(vm_id)
            try:
                value = await self.with_agent(
                    vm_id, lambda c: c.call(command, args, timeout=timeout)
                )
                count = replies.parse_count(value, command)
            except AgentError as exc:
                if not exc.request_sent or isinstance(exc, AgentCommandError):
                    # Known not frozen by us (refused or never sent): nothing to thaw.
                    # (A partial freeze error makes qemu-ga thaw what it froze itself.)
                    self.guard.release(vm_id)
                else:
                    # It may be frozen now, or later when the request gets through: do not
                    # keep showing the "thawed" of before; the guard owns it until a poll says.
                    self.store.update(vm_id, freeze=FreezeState.UNKNOWN)
                raise
            self.store.update(vm_id, freeze=FreezeState.FROZEN)
            self._reread_info(vm_id)
            return count

        return await self._bulk(
            "freeze",
            vm_ids,
            {"command": command, "arguments": args, "thaw_after": after},
            one,
            progress,
        )

    async def _thaw_one(self, vm_id: str) -> int | str:
        timeout = self.settings.action_timeout
        self._bump(vm_id)
        try:
            value = await self.with_agent(
                vm_id, lambda c: c.call("guest-fsfreeze-thaw", None, timeout=timeout)
            )
            count: int | str = replies.parse_count(value, "guest-fsfreeze-thaw")
        except AgentCommandError as exc:
            # The agent refused the thaw; if it says it is thawed all the same (Windows:
            # VSS let the writes go by itself after 10 s), the goal is reached.
            if await self._freeze_status(vm_id) is not FreezeState.THAWED:
                raise
            count = f"already thawed by the guest ({one_line(exc.desc)})"
        self.guard.release(vm_id)
        self.store.update(vm_id, freeze=FreezeState.THAWED)
        self._reread_info(vm_id)
        return count

    async def _freeze_status(self, vm_id: str) -> FreezeState | None:
        """What guest-fsfreeze-status says now; None if it cannot be asked."""
        timeout = self.settings.timeout
        try:
            value = await self.with_agent(
                vm_id, lambda c: c.call("guest-fsfreeze-status", None, timeout=timeout)
            )
        except AgentError:
            return None
        try:
            return replies.parse_fsfreeze_status(value)
        except AgentError:  # a reply of the wrong shape
            return None

    async def _guard_thaw(self, vm_id: str, reason: str) -> ActionResult:
        return (await self._bulk(f"thaw ({reason})", [vm_id], None, self._thaw_one, None))[0]

    async def thaw(
        self, vm_ids: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> list[ActionResult]:
        self._check_writable()
        return await self._bulk("thaw", vm_ids, None, self._thaw_one, progress)

    async def fstrim(
        self,
        vm_ids: Sequence[str],
        *,
        minimum: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        self._check_writable()
        args = {"minimum": minimum} if minimum is not None else None
        timeout = max(self.settings.action_timeout, 300.0)

        async def one(vm_id: str) -> list[dict[str, Any]]:
            value = await self.with_agent(
                vm_id, lambda c: c.call("guest-fstrim", args, timeout=timeout)
            )
            return [
                {"path": p.path, "trimmed": p.trimmed, "minimum": p.minimum, "error": p.error}
                for p in replies.parse_fstrim(value)
            ]

        return await self._bulk("fstrim", vm_ids, args, one, progress)

    async def _no_reply(
        self,
        action: str,
        command: str,
        args: dict[str, Any] | None,
        vm_ids: Sequence[str],
        progress: ProgressCallback | None,
    ) -> list[ActionResult]:
        async def one(vm_id: str) -> str:
            outcome = await self.with_agent(
                vm_id, lambda c: c.call_no_reply(command, args, grace=NO_REPLY_GRACE)
            )
            self._power_sent(vm_id, command, args)
            return (
                "sent; the guest closed the channel"
                if outcome is NoReplyOutcome.CHANNEL_CLOSED
                else "sent; no error from the agent"
            )

        return await self._bulk(
            action, vm_ids, {"command": command, "arguments": args}, one, progress
        )

    async def shutdown(
        self,
        vm_ids: Sequence[str],
        *,
        mode: str = "powerdown",
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        self._check_writable()
        if mode not in SHUTDOWN_MODES:
            raise ValueError(f"shutdown mode {mode!r}: expected one of {', '.join(SHUTDOWN_MODES)}")
        return await self._no_reply("shutdown", "guest-shutdown", {"mode": mode}, vm_ids, progress)

    async def suspend(
        self, vm_ids: Sequence[str], *, kind: str, progress: ProgressCallback | None = None
    ) -> list[ActionResult]:
        self._check_writable()
        action = SUSPEND_ACTIONS.get(kind)
        if action is None:
            raise ValueError(f"suspend {kind!r}: expected ram, disk or hybrid")
        return await self._no_reply(f"suspend-{kind}", action.command, None, vm_ids, progress)

    async def exec(
        self,
        vm_ids: Sequence[str],
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """Run a program in each guest; the value has exit code and captured output."""
        self._check_writable()
        if not argv:
            raise ValueError("exec needs a command")
        limit = timeout if timeout is not None else self.settings.action_timeout
        request_timeout = self.settings.timeout

        async def one(vm_id: str) -> dict[str, Any]:
            status = await self.with_agent(
                vm_id,
                lambda c: run_exec(
                    c, argv[0], list(argv[1:]), timeout=limit, request_timeout=request_timeout
                ),
            )
            return {
                "exitcode": status.exitcode,
                "signal": status.signal,
                "stdout": status.stdout.decode("utf-8", errors="replace"),
                "stderr": status.stderr.decode("utf-8", errors="replace"),
                "stdout_truncated": status.stdout_truncated,
                "stderr_truncated": status.stderr_truncated,
            }

        async def guarded(vm_id: str) -> dict[str, Any]:
            try:
                return await one(vm_id)
            except TimeoutError:
                raise AgentTimeout(f"the command did not finish within {limit:g} s") from None

        return await self._bulk("exec", vm_ids, {"argv": list(argv)}, guarded, progress)

    async def agent_command(
        self, vm_id: str, name: str, args: dict[str, Any] | None
    ) -> ActionResult:
        """Any agent command, raw (the CLI's `agent`), under the same rules as the verbs
        (`agent/policy.py`): refused read-only if it may change the guest; a freeze goes
        through the freeze guard (deadline, journal, keeper), a thaw ends its hold."""
        if self.settings.read_only and changes_guest(name, args):
            raise ReadOnlyError(f"read-only mode: {name} may change the guest")
        policy = command_policy(name)
        if policy.freeze:
            mountpoints = (args or {}).get("mountpoints")
            if mountpoints is not None and not (
                isinstance(mountpoints, list) and all(isinstance(m, str) for m in mountpoints)
            ):
                raise ValueError("mountpoints must be a list of strings")
            return (await self.freeze([vm_id], mountpoints=mountpoints or None))[0]
        if name == "guest-fsfreeze-thaw":
            return (await self.thaw([vm_id]))[0]
        timeout = self.settings.action_timeout

        async def one(vm: str) -> Any:
            if policy.no_reply:
                outcome = await self.with_agent(
                    vm, lambda c: c.call_no_reply(name, args, grace=NO_REPLY_GRACE)
                )
                self._power_sent(vm, name, args)
                return outcome.value
            return await self.with_agent(vm, lambda c: c.call(name, args, timeout=timeout))

        return (await self._bulk(f"agent {name}", [vm_id], args, one, None))[0]

    def hypervisor_states(self) -> dict[str, HypervisorState]:
        return {h.name: h.state for h in self.store.hypervisors()}
