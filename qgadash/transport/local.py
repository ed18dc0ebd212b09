"""Agents on this machine: unix sockets found by glob, or `tcp:HOST:PORT`."""

from __future__ import annotations

import asyncio
import glob
import os
import stat

from qgadash.agent.client import AgentCaller, AgentClient, AgentTraits
from qgadash.agent.codec import DEFAULT_MAX_REPLY
from qgadash.agent.errors import AgentConnectionError, AgentTimeout
from qgadash.transport.address import parse_tcp_address
from qgadash.transport.base import DiscoveredAgent, HypervisorState, StreamPair
from qgadash.transport.discovery import vm_name_for_socket

# asyncio's stream reader would otherwise cap its buffer at 64 KiB and pause reading.
_STREAM_LIMIT = 1024 * 1024


async def connect_client(
    open_coro: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    | asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    label: str,
    timeout: float,
    max_reply: int,
    traits: AgentTraits | None = None,
) -> AgentClient:
    """Open a stream; the client syncs before its first request goes out.

    Not here: a poll's requests then go out in the same write as the sync (see
    `AgentClient.call_many_raw`), one round trip less for every per-poll session.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await open_coro
    except TimeoutError:
        raise AgentTimeout(f"connecting to {label} took over {timeout:g} s") from None
    except OSError as exc:
        raise AgentConnectionError(f"cannot connect to {label}: {exc.strerror or exc}") from None
    return AgentClient(StreamPair(reader, writer), max_reply=max_reply, traits=traits)


class UnixEndpoint:
    """An agent socket on this machine. `traits`: what its agent taught earlier
    connections (request ids refused, guest-sync only), kept for the next ones."""

    def __init__(self, path: str, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self.path = path
        self.max_reply = max_reply
        self.traits = AgentTraits()

    @property
    def label(self) -> str:
        return f"unix:{self.path}"

    async def connect(self, timeout: float) -> AgentCaller:
        opening = asyncio.ensure_future(
            asyncio.open_unix_connection(self.path, limit=_STREAM_LIMIT)
        )
        return await connect_client(opening, self.label, timeout, self.max_reply, self.traits)


class TcpEndpoint:
    """An agent exposed on TCP (QEMU `-chardev socket,host=...,port=...`)."""

    def __init__(self, host: str, port: int, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self.host = host
        self.port = port
        self.max_reply = max_reply
        self.traits = AgentTraits()

    @property
    def label(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    async def connect(self, timeout: float) -> AgentCaller:
        opening = asyncio.ensure_future(
            asyncio.open_connection(self.host, self.port, limit=_STREAM_LIMIT)
        )
        return await connect_client(opening, self.label, timeout, self.max_reply, self.traits)


class LocalHypervisor:
    """This machine: sockets found by glob, no network in between."""

    def __init__(self, name: str, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self._name = name
        self.max_reply = max_reply

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> HypervisorState:
        return HypervisorState.LOCAL

    @property
    def error(self) -> str | None:
        return None

    @property
    def keeper(self) -> None:
        return None  # this machine: the local keeper process serves these agents

    async def discover(self, patterns: list[str]) -> list[DiscoveredAgent]:
        # Globbing thousands of paths is blocking file-system work: keep it off the loop.
        return await asyncio.to_thread(discover_local, patterns)

    def endpoint(self, address: str) -> UnixEndpoint | TcpEndpoint:
        tcp = parse_tcp_address(address)
        if tcp is not None:
            return TcpEndpoint(tcp[0], tcp[1], self.max_reply)
        return UnixEndpoint(address, self.max_reply)

    async def close(self) -> None:
        return None


def discover_local(patterns: list[str]) -> list[DiscoveredAgent]:
    """Sockets matching the globs, sorted, each named by `vm_name_for_socket`."""
    found: dict[str, DiscoveredAgent] = {}
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.expanduser(pattern))):
            try:
                if not stat.S_ISSOCK(os.stat(path).st_mode):
                    continue
            except OSError:
                continue
            if path not in found:
                found[path] = DiscoveredAgent(vm_name_for_socket(path), path)
    return list(found.values())
