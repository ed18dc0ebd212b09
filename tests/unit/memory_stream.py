"""A ByteStream whose far end is the simulator's sans-IO agent: the real client and the
simulated agent, with no socket between them (unit tests of the agent and poll paths)."""

from __future__ import annotations

import asyncio

from qgadash.sim.agent import Close, GuestAgent, PowerOff


class MemoryStream:
    """A ByteStream whose far end is a sans-IO simulated agent. `answers` limits how many
    writes get answered (then the agent hangs, as one whose guest froze up)."""

    def __init__(self, agent: GuestAgent, answers: int | None = None) -> None:
        self.agent = agent
        self.answers = answers
        self.written = bytearray()
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self, n: int) -> bytes:
        return await self._inbox.get()

    def write(self, data: bytes) -> None:
        self.written += data
        if self.answers is not None:
            if self.answers <= 0:
                return
            self.answers -= 1
        for out in self.agent.receive(data):
            if isinstance(out, bytes):
                self._inbox.put_nowait(out)
            elif isinstance(out, Close | PowerOff):
                self._inbox.put_nowait(b"")

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None
