"""A small scriptable agent on a unix socket, for hostile behaviour no real agent shows
(a file read that never ends, a seek that lies, a listing of the tests' choosing).

It speaks the wire protocol as qemu-ga 7.2 does (0xFF + guest-sync-delimited, ids
echoed, one reply per request in order); each command is answered by a handler the
test gives, which returns the `return` value or raises `FakeError` for an error reply.
Everything else is `CommandNotFound`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], Any]


class FakeError(Exception):
    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.error_class = error_class


def supported(names: list[str]) -> dict[str, Any]:
    """A guest-info reply offering `names`, all enabled."""
    return {
        "version": "7.2.22",
        "supported_commands": [
            {"name": n, "enabled": True, "success-response": True} for n in names
        ],
    }


class FakeAgent:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self.requests: list[dict[str, Any]] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = json.JSONDecoder()
        buffer = ""
        try:
            while chunk := await reader.read(65536):
                buffer += chunk.replace(b"\xff", b"").decode("utf-8", "replace")
                while True:
                    buffer = buffer.lstrip()
                    if not buffer:
                        break
                    try:
                        request, end = decoder.raw_decode(buffer)
                    except ValueError:
                        break
                    buffer = buffer[end:]
                    writer.write(self._answer(request))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, request: dict[str, Any]) -> bytes:
        self.requests.append(request)
        name = request.get("execute")
        rid = request.get("id")
        args = request.get("arguments") or {}
        if name == "guest-sync-delimited":
            return b"\xff" + json.dumps({"return": args.get("id")}).encode() + b"\n"
        if name == "guest-sync":
            return json.dumps({"return": args.get("id")}).encode() + b"\n"
        handler = self.handlers.get(str(name))
        reply: dict[str, Any]
        if handler is None:
            reply = {
                "error": {
                    "class": "CommandNotFound",
                    "desc": f"The command {name} has not been found",
                }
            }
        else:
            try:
                reply = {"return": handler(args)}
            except FakeError as exc:
                reply = {"error": {"class": exc.error_class, "desc": str(exc)}}
        if rid is not None:
            reply["id"] = rid
        return json.dumps(reply).encode() + b"\n"


@contextlib.asynccontextmanager
async def fake_agent(path: Path, handlers: dict[str, Handler]) -> AsyncIterator[FakeAgent]:
    agent = FakeAgent(path, handlers)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()
