"""What the rest of qgadash needs from a transport, independent of how bytes travel.

A transport turns an agent *address* into an `AgentCaller` (see `qgadash.agent.client`)
and, per hypervisor, discovers which agents exist. Raw-socket transports (local unix,
tcp, SSH streamlocal, SSH exec) give a `ByteStream` that the agent client speaks the
protocol over; libvirt gives a caller directly because libvirtd owns the socket.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from qgadash.agent.stream import ByteStream

__all__ = [
    "ByteStream",
    "DiscoveredAgent",
    "Endpoint",
    "HypervisorLink",
    "HypervisorState",
    "ManagedHypervisor",
    "StreamPair",
    "ThawKeeper",
]

if TYPE_CHECKING:
    from qgadash.agent.client import AgentCaller


class StreamPair:
    """Adapts a (reader, writer) pair, as asyncio and asyncssh return them, to `ByteStream`.

    The stream's own bound methods are handed out, not wrapped: every request of every
    poll goes through them.
    """

    __slots__ = ("close", "drain", "read", "reader", "write", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.read = reader.read
        self.write = writer.write
        self.drain = writer.drain
        self.close = writer.close


class HypervisorState(enum.Enum):
    """How this process reaches a hypervisor (contracts.md, `hypervisors[].state`)."""

    LOCAL = "local"
    CONNECTED = "connected"
    CONNECTING = "connecting"
    AUTH_FAILED = "auth-failed"
    HOST_KEY_REJECTED = "host-key-rejected"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class DiscoveredAgent:
    """An agent found on a hypervisor: its VM name and the address to reach it."""

    name: str
    address: str


class Endpoint(Protocol):
    """One VM's agent as a transport reaches it."""

    @property
    def label(self) -> str:
        """Where the agent is, for people: `unix:/run/qga/web-1.sock`, `hv1:/var/...`."""
        ...

    async def connect(self, timeout: float) -> AgentCaller:
        """A ready caller: connected, and in sync or syncing before its first request
        (raises `AgentError` otherwise)."""
        ...


class ThawKeeper(Protocol):
    """A thaw armed *next to the guest*, on the hypervisor, that fires at a deadline even
    if this process, its terminal or its link dies. Our own thaw disarms it; it never
    thaws once disarmed (it checks its own hold marker, named by `token`, first)."""

    async def probe(self, timeout: float) -> str | None:
        """None if a keeper can be armed on this hypervisor, else why not (for people)."""
        ...

    async def arm(self, address: str, token: str, seconds: float, timeout: float) -> str:
        """Arm a thaw of the agent at `address` in `seconds`; the kind armed ("systemd",
        "nohup"). Raises `AgentError` when it could not be armed."""
        ...

    async def disarm(self, token: str, timeout: float) -> None:
        """Our thaw succeeded (or the hold ended): the keeper must not fire."""
        ...

    async def pending(self, token: str, timeout: float) -> bool:
        """True while armed and not yet fired or disarmed (raises `AgentError` if the
        hypervisor cannot be asked)."""
        ...


class HypervisorLink(Protocol):
    """One hypervisor: how its agents are found and reached."""

    @property
    def keeper(self) -> ThawKeeper | None:
        """The hypervisor-side thaw keeper; None for this machine (the local keeper
        process of `qgadash.fleet.keeper` serves local agents)."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> HypervisorState: ...

    @property
    def error(self) -> str | None: ...

    async def discover(self, patterns: list[str]) -> list[DiscoveredAgent]:
        """Agents matching the globs (or every running domain, for libvirt)."""
        ...

    def endpoint(self, address: str) -> Endpoint: ...

    async def close(self) -> None: ...


@runtime_checkable
class ManagedHypervisor(Protocol):
    """A hypervisor whose manager knows each domain's state and its changes.

    States are the manager's words: libvirt's running, idle, paused, in shutdown, shut
    off, crashed, dying, pmsuspended; Proxmox's running, stopped.
    """

    @property
    def manager(self) -> str:
        """Who says so, for people: "libvirt", "proxmox"."""
        ...

    def domain_state(self, address: str) -> str | None: ...

    def on_domain_state(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(address, state)` on every change, as libvirt reports it."""
        ...
