"""Keeping a freeze's promise beyond this process: the journal and the keepers.

The guard (`fleet/guard.py`) thaws at deadlines while this process lives. This module
makes the deadline hold when it does not: before a timed freeze goes out it writes the
hold to the durable journal and arms a keeper next to the guest (the local keeper
process for agents this machine reaches directly, a timer on the hypervisor for SSH
ones); when the hold ends it removes the record and disarms the keeper. At start it
settles what an earlier, dead qgadash left in the journal.

Every step is audited as its own record: "keeper armed", "keeper disarmed",
"thaw (keeper)", "thaw (journal)".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Settings
from qgadash.fleet.guard import Hold
from qgadash.fleet.holds import (
    LOCAL_KEEPER,
    NO_KEEPER,
    HoldJournal,
    HoldRecord,
    Owner,
    Reach,
    new_token,
)
from qgadash.fleet.keeper import KEEPER_GRACE, KeeperUnavailable, ensure_local_keeper
from qgadash.fleet.links import make_link
from qgadash.fleet.sanitize import one_line
from qgadash.transport.base import HypervisorLink, ThawKeeper

log = logging.getLogger(__name__)

KEEPER_TIMEOUT = 15.0  # arming or disarming a keeper on a hypervisor
T = TypeVar("T")
ThawVia = Callable[[HoldRecord], Awaitable[None]]  # thaw a settled record (raises AgentError)


class HoldNotDurable(AgentConnectionError):
    """The hold could not be written to the journal: the freeze is not sent."""

    request_sent = False


@dataclass(frozen=True, slots=True)
class Settled:
    """What a start did with one hold an earlier qgadash left behind."""

    vm_id: str
    outcome: str  # "thawed", "thawed by keeper", "failed", "pending"
    detail: str = ""


class HoldKeeping:
    def __init__(
        self,
        journal: HoldJournal | None,
        audit: AuditLog | None,
        *,
        local_keeper: bool = True,
    ) -> None:
        self.journal = journal
        self.audit = audit
        self.local_keeper = local_keeper and journal is not None
        self._disarming: set[asyncio.Task[None]] = set()
        self._links: dict[str, HypervisorLink] = {}  # token -> link whose keeper is armed
        self._records: dict[str, HoldRecord] = {}
        self._starting_keeper = asyncio.Lock()  # a batch of freezes starts one keeper, not N

    async def _ensure_local_keeper(self) -> None:
        assert self.journal is not None
        async with self._starting_keeper:
            await ensure_local_keeper(self.journal, self.audit.path if self.audit else None)

    # -- before a freeze ------------------------------------------------------------

    async def keeper_for(self, link: HypervisorLink) -> str | None:
        """Why no keeper can be armed for agents of `link`, or None if one can."""
        keeper = link.keeper
        if keeper is None:
            if not self.local_keeper:
                return "no hold journal (the local keeper needs one)"
            return None
        try:
            return await keeper.probe(KEEPER_TIMEOUT)
        except AgentError as exc:
            return str(exc)

    async def arm(self, hold: Hold, reach: Reach, link: HypervisorLink, after: float) -> None:
        """Make `hold` durable: the journal record (HoldNotDurable if it cannot be written:
        the freeze must not go out), then a keeper (if none can be armed, the hold says
        why and the freeze goes on: the confirmation said so)."""
        if self.journal is None:
            return
        assert hold.deadline is not None
        keeper = link.keeper
        token = new_token()
        kind = LOCAL_KEEPER if keeper is None else "pending"
        record = HoldRecord(
            token, hold.vm_id, reach, hold.deadline, kind, Owner.this_process(), time.time()
        )
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.journal.write, record)
        except OSError as exc:
            raise HoldNotDurable(
                f"cannot write the hold journal {self.journal.directory}: {exc.strerror or exc}"
            ) from None
        hold.token = token
        try:
            if keeper is None:
                await self._ensure_local_keeper()
            else:
                kind = await keeper.arm(reach.address, token, after + KEEPER_GRACE, KEEPER_TIMEOUT)
                record = HoldRecord(
                    token, hold.vm_id, reach, hold.deadline, kind, record.owner, record.created
                )
                await asyncio.to_thread(self.journal.write, record)
                self._links[token] = link
        except (KeeperUnavailable, AgentError, OSError) as exc:
            # The operator was told before confirming when no keeper could be armed; the
            # freeze goes on, held by this process and the journal only.
            kind = NO_KEEPER
            record = HoldRecord(
                token, hold.vm_id, reach, hold.deadline, kind, record.owner, record.created
            )
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.journal.write, record)
            self._audit("keeper armed", hold.vm_id, {"token": token}, False, str(exc), started)
            log.warning("%s: no keeper armed: %s", hold.vm_id, exc)
            hold.keeper = f"{NO_KEEPER}: {one_line(str(exc))}"
            self._records[token] = record
            return
        hold.keeper = kind
        self._records[token] = record
        self._audit(
            "keeper armed", hold.vm_id, {"token": token, "keeper": kind}, True, None, started
        )

    async def moved(self, hold: Hold) -> None:
        """The hold's deadline moved (it counts from the freeze): the journal says so too,
        so the local keeper and a later start use the deadline that holds."""
        record = self._records.get(hold.token)
        if record is None or self.journal is None or hold.deadline is None:
            return
        record = dataclasses.replace(record, deadline=hold.deadline)
        self._records[hold.token] = record
        with contextlib.suppress(OSError):  # the earlier deadline stays: a keeper fires early
            await asyncio.to_thread(self.journal.write, record)

    # -- after a hold ends ------------------------------------------------------------

    def released(self, hold: Hold, why: str) -> None:
        """The guard's release hook: forget the record, disarm a remote keeper."""
        if not hold.token or self.journal is None:
            return
        self.journal.remove(hold.token)
        self._records.pop(hold.token, None)
        link = self._links.pop(hold.token, None)
        if link is not None and link.keeper is not None:
            task = asyncio.get_running_loop().create_task(self._disarm(link, hold, why))
            self._disarming.add(task)
            task.add_done_callback(self._disarming.discard)
        elif hold.keeper == LOCAL_KEEPER:
            self._audit(
                "keeper disarmed",
                hold.vm_id,
                {"token": hold.token, "why": why},
                True,
                None,
                time.perf_counter(),
            )

    async def _disarm(self, link: HypervisorLink, hold: Hold, why: str) -> None:
        keeper = link.keeper
        assert keeper is not None
        started = time.perf_counter()
        args = {"token": hold.token, "keeper": hold.keeper, "why": why}
        try:
            await keeper.disarm(hold.token, KEEPER_TIMEOUT)
        except AgentError as exc:
            self._audit("keeper disarmed", hold.vm_id, args, False, str(exc), started)
            log.warning("%s: keeper %s not disarmed: %s", hold.vm_id, hold.token, exc)
            return
        self._audit("keeper disarmed", hold.vm_id, args, True, None, started)

    async def drain(self) -> None:
        """Wait for disarms in flight (before the links close)."""
        while self._disarming:
            await asyncio.gather(*list(self._disarming), return_exceptions=True)

    # -- at start: what an earlier qgadash left --------------------------------------

    async def settle(self, thaw_via: ThawVia) -> list[Settled]:
        """Thaw the overdue holds of dead owners; leave the rest to their keepers.

        `thaw_via` thaws through the engine's own session where it has one for the VM
        (an exclusive socket admits one client), else over a link rebuilt from the record.
        """
        if self.journal is None:
            return []
        records, problems = await asyncio.to_thread(self.journal.load)
        out = [Settled("", "failed", p) for p in problems]
        due: list[HoldRecord] = []
        for record in records:
            if record.token in self._records or record.owner.alive():
                continue  # ours, or a live process's: it keeps its own promises
            if record.deadline > time.time():  # its owner is dead: no grace to wait for
                if record.keeper == LOCAL_KEEPER and self.local_keeper:
                    await self._ensure_local_keeper()
                due_in = record.deadline - time.time()
                out.append(
                    Settled(
                        record.vm_id, "pending", f"{record.keeper} keeper thaws in {due_in:.0f} s"
                    )
                )
                continue
            due.append(record)
        out += await asyncio.gather(*(self._settle_one(r, thaw_via) for r in due))
        return out

    async def _settle_one(self, record: HoldRecord, thaw_via: ThawVia) -> Settled:
        assert self.journal is not None
        started = time.perf_counter()
        args = {"token": record.token, "deadline": record.deadline, "keeper": record.keeper}
        if record.keeper not in (LOCAL_KEEPER, NO_KEEPER):
            fired = await self._remote_keeper_fired(record)
            if fired:
                self.journal.remove(record.token)
                self._audit("thaw (keeper)", record.vm_id, args, True, None, started)
                return Settled(record.vm_id, "thawed by keeper", record.keeper)
        try:
            await thaw_via(record)
        except AgentError as exc:
            self._audit("thaw (journal)", record.vm_id, args, False, str(exc), started)
            log.warning("%s: owed thaw from the journal failed: %s", record.vm_id, exc)
            return Settled(record.vm_id, "failed", str(exc))
        self.journal.remove(record.token)
        self._audit("thaw (journal)", record.vm_id, args, True, None, started)
        if record.keeper not in (LOCAL_KEEPER, NO_KEEPER):
            # A keeper that gave up leaves its marker: take it away, or a later freeze's
            # settle would read it as still armed.
            await self._remote_keeper(record, lambda k: k.disarm(record.token, KEEPER_TIMEOUT))
        return Settled(record.vm_id, "thawed", "")

    async def _remote_keeper_fired(self, record: HoldRecord) -> bool:
        """Whether the hypervisor's keeper has done its work (its marker is gone)."""
        pending = await self._remote_keeper(
            record, lambda k: k.pending(record.token, KEEPER_TIMEOUT)
        )
        return pending is False

    async def _remote_keeper(
        self, record: HoldRecord, ask: Callable[[ThawKeeper], Awaitable[T]]
    ) -> T | None:
        """`ask` the keeper of the record's hypervisor, over a link of its own; None if
        there is none or it cannot be reached."""
        link = make_link(record.reach.hypervisor_config(), Settings())
        try:
            keeper = link.keeper
            return None if keeper is None else await ask(keeper)
        except AgentError:
            return None
        finally:
            await link.close()

    def _audit(
        self,
        action: str,
        vm_id: str,
        args: object,
        ok: bool | None,
        error: str | None,
        started: float,
    ) -> None:
        if self.audit is not None:
            self.audit.record(
                action, vm_id, args, ok, error, (time.perf_counter() - started) * 1000
            )
