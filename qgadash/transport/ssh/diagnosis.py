"""What the hypervisor's shell says when a channel to an agent will not open or dies.

sshd answers every refused channel with the same "open failed", and socat behind an
exec/sudo channel only leaves an exit status and stderr. A short shell test of the
socket on the hypervisor (`transport/shell.py`'s `diagnose_command`) and a reading of
socat's and sudo's words turn those into a cause the operator can act on: no socket,
permission, forwarding refused, socat or the sudo wrapper missing.
"""

from __future__ import annotations

import os

import asyncssh

from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.transport.exec_stream import ProcessStream
from qgadash.transport.shell import diagnose_command
from qgadash.transport.ssh.link import SshLink


async def exec_failure(
    link: SshLink, address: str, stream: ProcessStream
) -> AgentConnectionError:
    status, stderr = await stream.failure()
    name, path = link.name, address
    user = link.connection.username or "the ssh user"
    low = stderr.lower()
    via = link.via
    if via == "sudo" and "sudo:" in low:
        if "password is required" in low or "not allowed" in low or "may not run" in low:
            return AgentConnectionError(
                f"{name}: sudo -n refused {link.sudo_wrapper} for {user} "
                f"({last_line(stderr)}); install the sudoers rule from docs/ssh.md"
            )
        if "command not found" in low or "no such file" in low:
            return AgentConnectionError(
                f"{name}: {link.sudo_wrapper} is not installed on "
                f"{link.connection.host} (see docs/ssh.md)"
            )
    if status == 127 or "socat: not found" in low or "socat: command not found" in low:
        return AgentConnectionError(f"{name}: socat is not installed on {link.connection.host}")
    if "refused:" in low:
        return AgentConnectionError(f"{name}: {last_line(stderr)}")
    if "no such file" in low:
        return AgentConnectionError(f"{name}: no agent socket at {path}")
    if "permission denied" in low:
        return AgentConnectionError(f"{name}: permission denied on {path} for {user}")
    if "connection refused" in low:
        if link.via == "exec":
            # socat says the same for a plain file; the shell test tells them apart.
            verdict = await diagnose(link, address)
            if verdict is not None and verdict.split()[0] not in ("usable", "listening"):
                return verdict_error(link, address, verdict, "connection refused")
        return AgentConnectionError(f"{name}: nothing listens on {path} (its VM is gone?)")
    if "resource temporarily unavailable" in low:
        return AgentConnectionError(f"{name}: {path} is busy (its backlog is full)")
    detail = last_line(stderr) or "no message"
    return AgentConnectionError(
        f"{name}: the relay to {path} ended (exit status {status}): {detail}"
    )


async def why_not(link: SshLink, address: str, exc: asyncssh.ChannelOpenError) -> AgentError:
    """sshd says only "open failed"; ask the hypervisor what is wrong with the socket."""
    verdict = await diagnose(link, address)
    if verdict is None:
        return AgentConnectionError(f"{link.name}: sshd would not open {address} ({exc.reason})")
    return verdict_error(link, address, verdict, exc.reason)


async def diagnose(link: SshLink, address: str) -> str | None:
    """`VERDICT USER` from a shell test of the socket on the hypervisor, None if unknown."""
    try:
        result = await link.connection.run(diagnose_command(address), timeout=5.0)
    except AgentError:
        return None
    out = result.stdout if isinstance(result.stdout, bytes) else b""
    text = " ".join(out.decode("utf-8", "replace").split())
    return text or None


def verdict_error(
    link: SshLink, address: str, verdict: str, reason: str
) -> AgentConnectionError:
    name, path = link.name, address
    word, _, user = verdict.partition(" ")
    user = user or link.connection.username or "the ssh user"
    directory = os.path.dirname(path)
    messages = {
        "missing": f"{name}: no agent socket at {path}",
        "nodir": (
            f"{name}: no agent socket at {path} (no directory {directory}, "
            f"or {user} may not search a parent)"
        ),
        "notsocket": f"{name}: {path} is not a socket",
        "noperm": (
            f'{name}: permission denied on {path} for {user} (use via = "sudo", or let '
            f"{user} read and write the socket)"
        ),
        "dirperm": f"{name}: permission denied on {directory} for {user}",
        "usable": f"{name}: nothing listens on {path} (its VM is gone?)",
        # sshd answers every refusal with the same "open failed"; with the socket
        # present, usable and listened on, what is left is sshd's own policy (or a
        # full backlog: someone else holds the agent).
        "listening": (
            f"{name}: sshd will not forward to {path}, which exists, is usable by {user} "
            "and is listened on: AllowStreamLocalForwarding is off (or DisableForwarding, "
            'or restrict in authorized_keys), or its backlog is full; via = "exec" '
            "needs no forwarding"
        ),
    }
    return AgentConnectionError(messages.get(word, f"{name}: cannot open {path} ({reason})"))


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
