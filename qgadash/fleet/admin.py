"""Guest administration on a selection: the clock, passwords, SSH keys, vCPUs, live stats.

What virsh (`domtime --sync`, `set-user-password`, `get/set-user-sshkeys`, `guestvcpus`)
does one VM at a time, here for every VM of a selection at once. Each verb is planned
first (`fleet.actions.make_plan`: agents that lack the command or have it disabled are
skipped with the reason), runs on every eligible VM concurrently through the engine's
`run_bulk` (one `ActionResult` per VM, one audit record per VM), and never lets a
password out: it travels as a `Secret` whose repr is `***`, and the audit record
carries the user name and whether it was crypted, never the value.

The live stats (CPU %, disk rates) are `fleet/live_stats.py`; `GuestAdmin.sampler`
makes one for a view.
"""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentCommandError
from qgadash.fleet.actions import Action, ActionPlan
from qgadash.fleet.admin_view import AdminView, no_key_file, read_admin_view
from qgadash.fleet.live_stats import StatsSampler
from qgadash.fleet.model import ActionResult, VmSnapshot

T = TypeVar("T")
ProgressCallback = Callable[[ActionResult], None]


class Secret:
    """A password on its way to the guest: never printed, logged or repr'd."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class AdminAccess(Protocol):
    """What the verbs need from the engine (FleetEngine satisfies it)."""

    def plan(self, action: Action, vm_ids: Sequence[str]) -> ActionPlan: ...

    def check_writable(self) -> None: ...

    async def with_agent(self, vm_id: str, work: Callable[[AgentCaller], Awaitable[T]]) -> T: ...

    async def run_bulk(
        self,
        action: str,
        vm_ids: Sequence[str],
        arguments: Any,
        one: Callable[[str], Awaitable[Any]],
        progress: ProgressCallback | None,
    ) -> list[ActionResult]: ...

    @property
    def action_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SshKeyChange:
    """What an add or remove does to one VM's authorized keys (the diff shown first)."""

    before: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]


def key_diff(before: Sequence[str], keys: Sequence[str], *, remove: bool) -> SshKeyChange:
    """The keys an add would add (not there yet) or a remove would remove (there now)."""
    have = set(before)
    if remove:
        return SshKeyChange(tuple(before), (), tuple(k for k in keys if k in have))
    return SshKeyChange(tuple(before), tuple(dict.fromkeys(k for k in keys if k not in have)), ())


def read_key_file(text: str) -> list[str]:
    """The public keys of an authorized_keys-style file: one per line, blank lines and
    comments dropped (qemu-ga refuses both: "invalid OpenSSH public key")."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    return keys


async def _get_keys(caller: AgentCaller, user: str, timeout: float) -> tuple[str, ...]:
    try:
        value = await caller.call(
            "guest-ssh-get-authorized-keys", {"username": user}, timeout=timeout
        )
    except AgentCommandError as exc:
        if no_key_file(exc):
            return ()
        raise
    return replies.parse_ssh_keys(value)


def parse_when(text: str) -> int:
    """Nanoseconds since the epoch from `now` (this machine's clock: also corrects a
    guest whose hardware clock is wrong, since qemu-ga then writes it),
    `2026-11-29T14:00:00Z` (ISO 8601; UTC when no zone is given) or epoch seconds."""
    text = text.strip()
    if text == "now":
        return time.time_ns()
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text[:60]!r}: expected now, ISO 8601 (2026-11-29T14:00:00Z) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return round(when.timestamp() * 1e9)


def drift_of(guest_ns: int, sent_at: float, rtt: float) -> float:
    """Guest clock minus ours, seconds (the middle of the round trip, as the poller)."""
    return guest_ns / 1e9 - (sent_at + rtt / 2)


async def _drift(caller: AgentCaller, timeout: float, clock: Callable[[], float]) -> float:
    sent_at = clock()
    started = time.perf_counter()
    value = await caller.call("guest-get-time", None, timeout=timeout)
    return drift_of(replies.parse_time(value), sent_at, time.perf_counter() - started)


# -- one line per VM, for people (the CLI's table, the dashboard's results) --------------


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:+.3f} s"


def drift_text(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    before, after = value.get("drift_before_s"), value.get("drift_after_s")
    return f"drift {_seconds(before)} -> {_seconds(after)}"


def vcpus_text(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    text = f"{value.get('online')} of {value.get('total')} online"
    offline = value.get("offline_ids") or []
    if offline:
        text += " (offline: " + ",".join(str(i) for i in offline) + ")"
    return text


def keys_text(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} key{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        added, removed = value.get("added") or [], value.get("removed") or []
        if not added and not removed:
            return "unchanged"
        return f"{len(added)} added, {len(removed)} removed"
    return ""


class GuestAdmin:
    """The administration verbs, each on a list of VM ids (planned, then run)."""

    def __init__(self, engine: AdminAccess, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def plan(self, action: Action, vm_ids: Sequence[str]) -> ActionPlan:
        return self._engine.plan(action, vm_ids)

    def sampler(self, vm_id: str) -> StatsSampler:
        """Live CPU % and disk rates of one VM, for a view that has it open."""
        return StatsSampler(self._engine, vm_id)

    async def view(self, snap: VmSnapshot | None, vm_id: str, users: Sequence[str]) -> AdminView:
        """The details' Admin tab: the VM's vCPUs and `users`' SSH keys, read now (read-only
        commands, not audited; see fleet/admin_view.py)."""
        return await read_admin_view(self._engine, snap, vm_id, users)

    async def _call(self, vm_id: str, name: str, args: dict[str, Any] | None) -> Any:
        timeout = self._engine.action_timeout
        return await self._engine.with_agent(vm_id, lambda c: c.call(name, args, timeout=timeout))

    # -- the clock ---------------------------------------------------------------------------

    async def time_sync(
        self,
        vm_ids: Sequence[str],
        *,
        when_ns: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """guest-set-time: without `when_ns` the guest sets its clock from its hardware
        clock, which QEMU keeps at the host's time (`virsh domtime --sync`); with it, to
        that time. The value per VM: drift before and after, seconds."""
        self._engine.check_writable()
        args = {"time": when_ns} if when_ns is not None else None
        timeout = self._engine.action_timeout

        async def one(vm_id: str) -> dict[str, Any]:
            async def work(c: AgentCaller) -> dict[str, Any]:
                before: float | None
                try:
                    before = await _drift(c, timeout, self._clock)
                except replies.ReplyShapeError:
                    before = None
                await c.call("guest-set-time", args, timeout=timeout)
                after = await _drift(c, timeout, self._clock)
                return {
                    "drift_before_s": round(before, 3) if before is not None else None,
                    "drift_after_s": round(after, 3),
                }

            return await self._engine.with_agent(vm_id, work)

        audit = {"time": when_ns if when_ns is not None else "from the guest's hardware clock"}
        return await self._engine.run_bulk("time-sync", vm_ids, audit, one, progress)

    # -- passwords ---------------------------------------------------------------------------

    async def set_password(
        self,
        vm_ids: Sequence[str],
        user: str,
        password: Secret,
        *,
        crypted: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """guest-set-user-password: a clear password (the guest hashes it) or a crypt(3)
        hash with `crypted`. The audit gets the user, never the password."""
        self._engine.check_writable()
        if not user:
            raise ValueError("a user name is needed")
        if not password:
            raise ValueError("an empty password is not set")

        async def one(vm_id: str) -> str:
            encoded = base64.b64encode(password.reveal().encode()).decode("ascii")
            await self._call(
                vm_id,
                "guest-set-user-password",
                {"username": user, "password": encoded, "crypted": crypted},
            )
            return f"password of {user} set"

        audit = {"username": user, "password": "***", "hash": crypted}
        return await self._engine.run_bulk("password", vm_ids, audit, one, progress)

    # -- SSH keys ----------------------------------------------------------------------------

    async def ssh_keys(
        self, vm_ids: Sequence[str], user: str, *, progress: ProgressCallback | None = None
    ) -> list[ActionResult]:
        """guest-ssh-get-authorized-keys: the value per VM is the list of keys."""

        timeout = self._engine.action_timeout

        async def one(vm_id: str) -> list[str]:
            return list(await self._engine.with_agent(vm_id, lambda c: _get_keys(c, user, timeout)))

        return await self._engine.run_bulk(
            "ssh-keys list", vm_ids, {"username": user}, one, progress
        )

    async def ssh_keys_change(
        self,
        vm_ids: Sequence[str],
        user: str,
        keys: Sequence[str],
        *,
        remove: bool,
        progress: ProgressCallback | None = None,
    ) -> list[ActionResult]:
        """Add (guest-ssh-add-authorized-keys) or remove keys; the value per VM says
        which keys were added or removed (read before the change, in the same session)."""
        self._engine.check_writable()
        if not keys:
            raise ValueError("no keys given")
        command = "guest-ssh-remove-authorized-keys" if remove else "guest-ssh-add-authorized-keys"
        timeout = self._engine.action_timeout

        async def one(vm_id: str) -> dict[str, Any]:
            async def work(c: AgentCaller) -> dict[str, Any]:
                change = key_diff(await _get_keys(c, user, timeout), keys, remove=remove)
                if change.added or change.removed:  # else nothing to send (nor to remove from)
                    await c.call(command, {"username": user, "keys": list(keys)}, timeout=timeout)
                return {"added": list(change.added), "removed": list(change.removed)}

            return await self._engine.with_agent(vm_id, work)

        verb = "ssh-keys remove" if remove else "ssh-keys add"
        return await self._engine.run_bulk(
            verb, vm_ids, {"username": user, "keys": list(keys)}, one, progress
        )

    # -- vCPUs -------------------------------------------------------------------------------

    async def vcpus(
        self, vm_ids: Sequence[str], *, progress: ProgressCallback | None = None
    ) -> list[ActionResult]:
        """guest-get-vcpus: the value per VM is {online, offline, total, ids offline}."""

        async def one(vm_id: str) -> dict[str, Any]:
            return vcpu_summary(
                replies.parse_vcpus(await self._call(vm_id, "guest-get-vcpus", None))
            )

        return await self._engine.run_bulk("vcpus", vm_ids, None, one, progress)

    async def set_vcpus(
        self, vm_ids: Sequence[str], online: int, *, progress: ProgressCallback | None = None
    ) -> list[ActionResult]:
        """Bring `online` vCPUs online in each guest: the lowest ids online, the rest
        offline (those the guest can offline). A guest with fewer vCPUs gets all."""
        self._engine.check_writable()
        if online < 1:
            raise ValueError("at least one vCPU stays online")
        timeout = self._engine.action_timeout

        async def one(vm_id: str) -> dict[str, Any]:
            async def work(c: AgentCaller) -> dict[str, Any]:
                cpus = replies.parse_vcpus(await c.call("guest-get-vcpus", None, timeout=timeout))
                wanted = vcpu_request(cpus, online)
                changed = 0
                if wanted:
                    changed = replies.parse_count(
                        await c.call("guest-set-vcpus", {"vcpus": wanted}, timeout=timeout),
                        "guest-set-vcpus",
                    )
                after = replies.parse_vcpus(await c.call("guest-get-vcpus", None, timeout=timeout))
                summary = vcpu_summary(after)
                summary["changed"] = changed
                return summary

            return await self._engine.with_agent(vm_id, work)

        return await self._engine.run_bulk("vcpus set", vm_ids, {"online": online}, one, progress)


def vcpu_summary(cpus: Sequence[replies.Vcpu]) -> dict[str, Any]:
    offline = sorted(c.logical_id for c in cpus if not c.online)
    return {
        "online": sum(1 for c in cpus if c.online),
        "offline": len(offline),
        "total": len(cpus),
        "offline_ids": offline,
    }


def vcpu_request(cpus: Sequence[replies.Vcpu], online: int) -> list[dict[str, Any]]:
    """The guest-set-vcpus entries that leave the `online` lowest ids online: only the
    vCPUs whose state changes (qemu-ga stops at the first it cannot change)."""
    out: list[dict[str, Any]] = []
    for rank, cpu in enumerate(sorted(cpus, key=lambda c: c.logical_id)):
        want = rank < online
        if want == cpu.online:
            continue
        if not want and cpu.can_offline is False:
            continue
        out.append({"logical-id": cpu.logical_id, "online": want})
    return out
