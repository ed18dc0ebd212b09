"""Per-VM channel traces for `--debug`: the bytes each agent channel carries, as log
records of the `qgadash.channel` logger, with secrets masked.

A real agent that misbehaves (garbage, a reply with no newline, a stale reply after a
timeout) is diagnosed from the bytes, not from "garbage from the agent". Only wrapped in
when that logger is enabled for DEBUG, so the poll path pays nothing otherwise.

Masking: each request written is parsed back; arguments the command policy calls secret
(passwords, exec's argv and env) become `***`, payloads their length. Each reply line is
logged with its payload strings (file contents, exec output) replaced by their length,
and cut at `EXCERPT` characters. Partial lines wait for their newline (a reply is logged
whole or, if the channel closes first, as a byte count).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from qgadash.agent.policy import BULKY_KEYS, SECRET_KEYS
from qgadash.agent.stream import ByteStream

__all__ = ["CHANNEL_LOG", "TracingStream", "mask_reply", "mask_request"]

CHANNEL_LOG = logging.getLogger("qgadash.channel")
EXCERPT = 400
# Reply members that carry a guest's data, not the agent's words.
_PAYLOAD = re.compile(rb'"(buf-b64|out-data|err-data|input-data)": ?"([^"]*)"')


def mask_request(document: Any) -> Any:
    """A request with its secret arguments as *** and payloads as their length."""
    if not isinstance(document, dict) or not isinstance(document.get("arguments"), dict):
        return document
    arguments = {}
    for key, value in document["arguments"].items():
        if key in SECRET_KEYS:
            arguments[key] = "***"
        elif key in BULKY_KEYS and isinstance(value, str):
            arguments[key] = f"<{len(value)} base64 chars>"
        else:
            arguments[key] = value
    return {**document, "arguments": arguments}


def mask_reply(line: bytes) -> str:
    """One reply line, its payloads as lengths, cut to EXCERPT characters."""
    masked = _PAYLOAD.sub(lambda m: b'"%s": "<%d chars>"' % (m[1], len(m[2])), line)
    text = masked.decode("utf-8", "backslashreplace")
    return text if len(text) <= EXCERPT else f"{text[:EXCERPT]}… ({len(line)} bytes)"


def _requests(data: bytes) -> list[str]:
    """What was written, request by request (and 0xFF sync markers), masked."""
    out = ["0xFF"] * data.count(b"\xff")
    text = data.replace(b"\xff", b"").decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i] in " \r\n\t":
            i += 1
        if i >= len(text):
            return out
        try:
            document, i = decoder.raw_decode(text, i)
        except ValueError:
            out.append(f"<{len(text) - i} unparsed characters>")
            return out
        out.append(json.dumps(mask_request(document), separators=(",", ":")))


class TracingStream:
    """A ByteStream that logs what passes through it, per VM."""

    def __init__(self, stream: ByteStream, label: str) -> None:
        self._stream = stream
        self._label = label
        self._pending = b""

    async def read(self, n: int) -> bytes:
        data = await self._stream.read(n)
        if not data:
            if self._pending:
                CHANNEL_LOG.debug("%s <- %d bytes with no newline", self._label, len(self._pending))
            CHANNEL_LOG.debug("%s <- end of stream", self._label)
            self._pending = b""
            return data
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            if line.startswith(b"\xff"):
                CHANNEL_LOG.debug("%s <- 0xFF", self._label)
                line = line.lstrip(b"\xff")
            if line:
                CHANNEL_LOG.debug("%s <- %s", self._label, mask_reply(line))
        if len(self._pending) > 1024 * 1024:  # one huge reply: say so, don't keep it twice
            CHANNEL_LOG.debug("%s <- %d bytes so far of one reply", self._label, len(self._pending))
            self._pending = b""
        return data

    def write(self, data: bytes) -> None:
        for request in _requests(data):
            CHANNEL_LOG.debug("%s -> %s", self._label, request)
        self._stream.write(data)

    async def drain(self) -> None:
        await self._stream.drain()

    def close(self) -> None:
        self._stream.close()
