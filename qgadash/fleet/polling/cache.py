"""What polls remember to spare CPU: one object per engine, owning all of it.

Three memories, each bounded, each saving work the profile showed on every poll:

- **A VM's last replies** (`last_replies`): a reply whose bytes equal the last poll's is
  not decoded or parsed again (compared in C; most of a poll's CPU was guest-info's
  parse). Only replies whose parse depends on the reply alone are remembered (`REMEMBERED`).
- **Replies shared across the fleet** (`shared`): guest-info, the OS and the time zone are
  often byte-identical on hundreds of guests; parsed once, every VM that sent the same
  bytes holds the same value and the same bytes object (memory, and fewer objects for
  the garbage collector to walk).
- **Each poll's command list** (`commands`): the same for every VM with the same plan
  and guest-info, which the sharing above makes the same object; kept by identity
  (hashing an `AgentInfo` walks its whole command list).

The rule all three keep: the cache changes how much work a poll does, never its outcome
(tests/unit/fleet/polling/ checks a cached poll against an uncached one).
"""

from __future__ import annotations

from typing import Any

from qgadash.agent.codec import decode_body
from qgadash.agent.replies import AgentInfo
from qgadash.fleet.polling.facts import FOLDS
from qgadash.fleet.polling.plan import PollPlan

# Replies whose parsed form depends only on the reply (not on when it came, or on
# the last poll's beyond what is remembered with it).
REMEMBERED = frozenset(
    {
        "guest-info",
        "guest-get-osinfo",
        "guest-get-host-name",
        "guest-get-users",
        "guest-get-timezone",
        "guest-get-disks",
        "guest-network-get-interfaces",
        "guest-get-fsinfo",
        "guest-get-load",
    }
)
# Replies often identical across a fleet (each must be in FOLDS).
SHARED = frozenset({"guest-info", "guest-get-osinfo", "guest-get-timezone"})

LastReplies = dict[str, object]  # command → its last reply, as the caller returned it


class PollCache:
    """The poll path's memory for one engine (see the module's docstring)."""

    def __init__(self, shared_max: int = 4096, commands_max: int = 1024) -> None:
        self._last: dict[str, LastReplies] = {}
        self._shared: dict[tuple[str, bytes], tuple[bytes, Any]] = {}
        self._shared_max = shared_max
        self._commands: dict[tuple[int, int, bool], tuple[PollPlan, AgentInfo, list[str]]] = {}
        self._commands_max = commands_max

    def last_replies(self, vm_id: str) -> LastReplies:
        """The VM's last replies; the poll reads and updates it in place."""
        last = self._last.get(vm_id)
        if last is None:
            last = self._last[vm_id] = {}
        return last

    def forget(self, vm_id: str) -> None:
        """The VM left the inventory."""
        self._last.pop(vm_id, None)

    def commands(self, plan: PollPlan, info: AgentInfo | None, poll_number: int) -> list[str]:
        """`plan.commands` for this poll, computed once per plan, guest-info and kind."""
        slow = plan.is_slow(info, poll_number)
        if info is None:
            return plan.commands(None, slow)
        key = (id(plan), id(info), slow)
        hit = self._commands.get(key)
        if hit is not None:
            return hit[2]
        names = plan.commands(info, slow)
        if len(self._commands) >= self._commands_max:
            self._commands.clear()
        # The entry holds the plan and the info: while it exists their ids cannot be
        # reused by other objects, so the key cannot name anything else.
        self._commands[key] = (plan, info, names)
        return names

    def shared(self, name: str, body: bytes) -> tuple[bytes, Any]:
        """The reply's bytes and parsed value, both the ones the first VM that sent these
        bytes paid for (raises what its parser raises: nothing is kept then)."""
        key = (name, body)
        hit = self._shared.get(key)
        if hit is None:
            value = FOLDS[name].parse(decode_body(body))
            if len(self._shared) >= self._shared_max:
                self._shared.pop(next(iter(self._shared)))
            hit = self._shared[key] = (body, value)
        return hit
