"""What an SSH endpoint and the channel diagnosis need of their hypervisor.

A Protocol, because the hypervisor builds its endpoints: they cannot import it back.
`SshHypervisor` satisfies it (mypy checks that where the hypervisor builds them).
"""

from __future__ import annotations

from typing import Protocol

from qgadash.transport.ssh.connection import SshConnection

__all__ = ["SshLink"]


class SshLink(Protocol):
    connection: SshConnection
    via: str  # "exec" | "socket" | "tcp" | "sudo"
    max_reply: int
    sudo_wrapper: str

    @property
    def name(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    def agent_disabled(self, address: str) -> str | None:
        """Why the manager says this guest has no agent (Proxmox `agent: 0`), if it does."""
        ...
