"""What the details' Admin tab shows of one VM: its vCPUs and some users' SSH keys.

Read when the tab opens, not polled: guest-get-vcpus and one
guest-ssh-get-authorized-keys per user, pipelined in one write. Both are read-only
commands (agent/policy.py), so read-only mode allows them and nothing is confirmed or
audited, as for the live stats and the file view. A command the agent lacks or has
disabled is not sent; the view says why instead (the same reasons as an action plan).

Whose keys: the administrator (root; Administrator on Windows), whoever the guest says
is logged in (guest-get-users, already polled), and any user the operator asked for.
guest-get-users lists sessions, not accounts, and qemu-ga has no command that lists
accounts, so these are the users an operator is most likely to care about; anyone else
is one prompt away.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qgadash.agent import replies
from qgadash.agent.client import AgentCaller
from qgadash.agent.errors import AgentCommandError, AgentUnsupported
from qgadash.fleet.actions import Action, is_windows, skip_reason
from qgadash.fleet.live_stats import AgentAccess
from qgadash.fleet.model import VmSnapshot

# At most this many users' keys are read at once (one request each).
MAX_USERS = 8
# Key types as OpenSSH writes them (ssh-keygen -t ...), to find the key in an
# authorized_keys line that starts with options (from="...",no-pty ssh-ed25519 ...).
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


@dataclass(frozen=True, slots=True)
class UserKeys:
    """One user's authorized keys as the guest reported them, or why they could not be read."""

    user: str
    keys: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AdminView:
    """The Admin tab's content: each part, or the reason it is missing."""

    vcpus: tuple[replies.Vcpu, ...] | None
    vcpus_note: str | None
    users: tuple[UserKeys, ...]
    keys_note: str | None


@dataclass(frozen=True, slots=True)
class KeySummary:
    """An authorized_keys line, short: its type, SHA256 fingerprint (what `ssh-keygen
    -l` prints, what people compare) and comment. None fields: the line did not parse."""

    key_type: str | None
    fingerprint: str | None
    comment: str
    options: str


def no_key_file(exc: AgentCommandError) -> bool:
    """qemu-ga fails to read a user's keys when the user has no authorized_keys: no keys."""
    return "authorized_keys" in exc.desc and "No such file or directory" in exc.desc


def key_summary(line: str) -> KeySummary:
    """The type, fingerprint and comment of one authorized_keys line (guest text: the
    caller shows it as plain text). A line that is not a key keeps its text as comment."""
    tokens = line.split()
    for i, token in enumerate(tokens[:-1]):
        if not token.startswith(_KEY_TYPE_PREFIXES):
            continue
        try:
            blob = base64.b64decode(tokens[i + 1], validate=True)
        except (binascii.Error, ValueError):
            continue
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
        return KeySummary(
            token, f"SHA256:{digest}", " ".join(tokens[i + 2 :]), " ".join(tokens[:i])
        )
    return KeySummary(None, None, line.strip(), "")


def key_users(snap: VmSnapshot | None, asked: Sequence[str] = ()) -> tuple[str, ...]:
    """The users whose keys the tab reads: the administrator, the logged-in users, then
    those the operator asked for (latest first), without repeats, at most MAX_USERS."""
    admin = "Administrator" if is_windows(snap) else "root"
    logged_in = [u.name for u in (snap.facts.users or ()) if u.name] if snap else []
    wanted = [*reversed(asked), admin, *logged_in]
    return tuple(dict.fromkeys(wanted))[:MAX_USERS]


async def read_admin_view(
    access: AgentAccess, snap: VmSnapshot | None, vm_id: str, users: Sequence[str]
) -> AdminView:
    """One pipelined read of the VM's vCPUs and `users`' keys (raises AgentError only
    when the agent could not be reached or answered nothing usable)."""
    if snap is None:
        return AdminView(None, "no such VM", (), "no such VM")
    vcpus_note = skip_reason(Action.VCPUS, snap, False)
    keys_note = skip_reason(Action.SSH_KEYS_LIST, snap, False)
    requests: list[tuple[str, dict[str, Any] | None]] = []
    if vcpus_note is None:
        requests.append(("guest-get-vcpus", None))
    if keys_note is None:
        requests += [("guest-ssh-get-authorized-keys", {"username": u}) for u in users]
    if not requests:
        return AdminView(None, vcpus_note, (), keys_note)
    timeout = access.action_timeout

    async def work(c: AgentCaller) -> list[Any]:
        return await c.call_many(requests, timeout=timeout)

    try:
        results = await access.with_agent(vm_id, work)
    except AgentUnsupported as exc:  # guest-info changed since the last poll
        return AdminView(None, str(exc), (), str(exc))
    vcpus: tuple[replies.Vcpu, ...] | None = None
    found: list[UserKeys] = []
    for (name, args), result in zip(requests, results, strict=True):
        if name == "guest-get-vcpus":
            if isinstance(result, Exception):
                vcpus_note = str(result)
            else:
                try:
                    vcpus = replies.parse_vcpus(result)
                except replies.ReplyShapeError as exc:
                    vcpus_note = f"nonsense from the agent: {exc}"
            continue
        user = str((args or {})["username"])
        if isinstance(result, AgentCommandError) and no_key_file(result):
            found.append(UserKeys(user))
        elif isinstance(result, Exception):
            found.append(UserKeys(user, error=str(result)))
        else:
            try:
                found.append(UserKeys(user, replies.parse_ssh_keys(result)))
            except replies.ReplyShapeError as exc:
                found.append(UserKeys(user, error=f"nonsense from the agent: {exc}"))
    return AdminView(vcpus, vcpus_note, tuple(found), keys_note)
