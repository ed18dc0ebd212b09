"""The byte stream the agent client speaks over; every transport provides one.

Defined here, beside the client that needs it, so the protocol layer imports nothing of
the transports (they import it: asyncio streams and asyncssh channels both fit).
"""

from __future__ import annotations

from typing import Protocol


class ByteStream(Protocol):
    """A bidirectional byte stream (asyncio streams and asyncssh channels both fit)."""

    async def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...
