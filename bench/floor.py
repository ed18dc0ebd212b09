"""The raw floor: the least CPU a poll can cost in Python.

Plain asyncio, held sockets, no decoder beyond split-on-newline and json.loads, the
same three requests per VM as qgadash's benchmark plan (guest-info,
guest-fsfreeze-status, guest-network-get-interfaces) pipelined in one write.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

REQUESTS = b"".join(
    json.dumps({"execute": name, "id": i}).encode()
    for i, name in enumerate(
        ("guest-info", "guest-fsfreeze-status", "guest-network-get-interfaces"), start=1
    )
)


class FloorClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    @classmethod
    async def connect(cls, path: Path) -> FloorClient:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        client = cls(reader, writer)
        sync_id = random.randint(1, 2**62)
        writer.write(
            b"\xff"
            + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode()
        )
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(path)
            if b"\xff" in data:
                data = data[data.rindex(b"\xff") + 1 :]
                client.buffer = b""
            client.buffer += data
            while b"\n" in client.buffer:
                line, client.buffer = client.buffer.split(b"\n", 1)
                if line.strip() and json.loads(line).get("return") == sync_id:
                    return client

    async def poll(self) -> list[object]:
        self.writer.write(REQUESTS)
        replies: list[object] = []
        while len(replies) < 3:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            self.buffer += data
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                if line.strip():
                    replies.append(json.loads(line))
        return replies

    def close(self) -> None:
        self.writer.close()
