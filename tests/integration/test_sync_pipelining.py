"""A poll on a fresh or confused channel sends its sync and its requests in one go; a
request that changes the guest never goes out before the sync has been answered."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qgadash.agent.client import AgentClient
from qgadash.agent.errors import AgentTimeout
from qgadash.transport.local import UnixEndpoint
from tests.integration.realagent import MakeRealAgents, RealAgent

POLL = [("guest-info", None), ("guest-fsfreeze-status", None), ("guest-get-host-name", None)]


@pytest.fixture
def agent(real_agent_factory: MakeRealAgents) -> RealAgent:
    return real_agent_factory(1, ["solo"])[0]


async def connect(path: Path) -> AgentClient:
    client = await UnixEndpoint(str(path)).connect(2.0)
    assert isinstance(client, AgentClient)
    return client


@pytest.mark.real_agent
async def test_a_fresh_channels_poll_goes_out_with_its_sync(agent: RealAgent) -> None:
    client = await connect(agent.socket)
    try:
        info, freeze, host = await client.call_many_raw(POLL, timeout=2.0, read_only=True)
        assert isinstance(info, bytes) and b'"supported_commands"' in info
        assert freeze == b'"thawed"'
        assert isinstance(host, bytes) and b"host-name" in host
        # In sync now: the next calls, read-only or not, need no sync.
        assert await client.call("guest-ping", timeout=2.0) == {}
        again = await client.call_many_raw(POLL[1:2], timeout=2.0, read_only=True)
        assert again == [b'"thawed"']
    finally:
        await client.close()


@pytest.mark.real_agent
async def test_stale_bytes_before_the_sync_are_skipped(agent: RealAgent) -> None:
    """A channel left with half a request in it (another client died mid-write)."""
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(agent.socket))
        raw.sendall(b'{"execute": "guest-info", "id": 1}{"execute": "guest-ping", "argu')
    client = await connect(agent.socket)
    try:
        results = await client.call_many_raw(POLL, timeout=3.0, read_only=True)
        assert results[1] == b'"thawed"'
    finally:
        await client.close()


class SilentPeer:
    """A socket that reads everything and never answers: a guest whose agent hangs.
    (The real agent always answers a sync; this fault is what it cannot show.)"""

    def __init__(self) -> None:
        self.received = bytearray()
        self.hung_up = asyncio.Event()  # the client closed: all it wrote has been read

    async def serve(self, path: Path) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                self.received += data
            writer.close()
            self.hung_up.set()

        return await asyncio.start_unix_server(handle, str(path))


@pytest.fixture
async def silent(tmp_path: Path) -> AsyncIterator[tuple[SilentPeer, Path]]:
    peer = SilentPeer()
    path = tmp_path / "silent.sock"
    server = await peer.serve(path)
    yield peer, path
    server.close()


async def test_a_guest_changing_request_waits_for_the_sync(
    silent: tuple[SilentPeer, Path],
) -> None:
    peer, path = silent
    client = await connect(path)
    try:
        with pytest.raises(AgentTimeout) as caught:
            await client.call_many_raw([("guest-fsfreeze-freeze", None)], timeout=0.3)
        assert caught.value.request_sent is False
    finally:
        await client.close()
    await asyncio.wait_for(peer.hung_up.wait(), 5)
    assert b"guest-sync-delimited" in peer.received
    assert b"guest-fsfreeze-freeze" not in peer.received


async def test_a_polls_requests_follow_its_sync_at_once(silent: tuple[SilentPeer, Path]) -> None:
    peer, path = silent
    client = await connect(path)
    try:
        with pytest.raises(AgentTimeout) as caught:
            await client.call_many_raw(POLL, timeout=0.3, read_only=True)
        assert caught.value.request_sent is True
    finally:
        await client.close()
    await asyncio.wait_for(peer.hung_up.wait(), 5)
    received = bytes(peer.received)
    assert received.startswith(b"\xff")
    sync_at = received.index(b"guest-sync-delimited")
    assert sync_at < received.index(b"guest-info") < received.index(b"guest-get-host-name")
