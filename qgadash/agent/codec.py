"""Sans-IO codec for the qemu-ga wire protocol: bytes in, replies out.

The agent sends compact JSON documents each ended by a newline. A JSON string cannot
hold a raw newline, so the newline is a reliable boundary; a 0xFF byte (the marker the
agent puts before a `guest-sync-delimited` reply) drops whatever partial reply is
buffered. Every reply is bounded: a document longer than `max_reply` is discarded as it
streams in, never buffered whole, and nesting deeper than `max_depth` is refused.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

DEFAULT_MAX_REPLY = 16 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
SYNC_MARKER = 0xFF
_NL = 0x0A


class Reply(NamedTuple):
    """One well-formed reply: either `value` (the `return` member) or `error_class`/`desc`.

    From a lazy decoder, a success reply may carry `body` (the `return` member's JSON
    text, undecoded) instead of `value`: callers that cache replies compare bytes and
    decode only what changed (`decode_body`). A NamedTuple, as immutable as a frozen
    dataclass and cheaper to build: every reply of every poll is one.
    """

    id: Any
    value: Any = None
    error_class: str | None = None
    desc: str | None = None
    body: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.error_class is None


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Bytes that were not a reply; the decoder has already resynchronised past them."""

    reason: str


Message = Reply | DecodeError


@functools.lru_cache(maxsize=256)
def _request_template(name: str) -> bytes:
    """`{"execute":NAME,"id":%d}`, with any % in the name escaped for the id's formatting."""
    return b'{"execute":' + json.dumps(name).encode().replace(b"%", b"%%") + b',"id":%d}'


@functools.lru_cache(maxsize=256)
def _bare_request(name: str) -> bytes:
    """`{"execute":NAME}`: what an agent that takes no ids gets on every poll."""
    return b'{"execute":' + json.dumps(name).encode() + b"}"


def encode_request(name: str, arguments: dict[str, Any] | None = None, id: Any = None) -> bytes:
    """One request document; only the members the agent accepts (`id` only when given:
    agents before qemu-ga 2.12 refuse a request that has one)."""
    if not arguments:
        # The poll's hot path: no arguments, an integer id or none.
        if type(id) is int:
            return _request_template(name) % id
        if id is None:
            return _bare_request(name)
    request: dict[str, Any] = {"execute": name}
    if arguments:
        request["arguments"] = arguments
    if id is not None:
        request["id"] = id
    return json.dumps(request, separators=(",", ":")).encode()


def encode_sync(sync_id: int, *, delimited: bool = True, probe_id: int | None = None) -> bytes:
    """0xFF (flushes a half-parsed request in the agent), then guest-sync-delimited, or
    guest-sync for agents older than qemu-ga 1.1. `probe_id` puts a request id on the
    sync itself, to learn from its reply whether the agent echoes ids."""
    name = "guest-sync-delimited" if delimited else "guest-sync"
    return b"\xff" + encode_request(name, {"id": sync_id}, probe_id)


class Decoder:
    """Turns a byte stream from the agent into `Reply` and `DecodeError` messages."""

    def __init__(
        self,
        max_reply: int = DEFAULT_MAX_REPLY,
        max_depth: int = DEFAULT_MAX_DEPTH,
        lazy: bool = False,
    ):
        if max_reply < 2:
            raise ValueError("max_reply must be at least 2 bytes")
        self.max_reply = max_reply
        self.max_depth = max_depth
        self.lazy = lazy
        self._buffer = bytearray()
        self._discarding = False
        self.resyncs = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete reply (never more than `max_reply`)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial reply (used on 0xFF and on a fresh connection)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Message]:
        """Consume `data`; return every message it completes, in order."""
        out: list[Message] = []
        start = 0
        end = len(data)
        while start < end:
            ff = data.find(b"\xff", start)
            stop = end if ff < 0 else ff
            self._feed_plain(data, start, stop, out)
            if ff < 0:
                break
            self.reset()
            self.resyncs += 1
            start = ff + 1
        return out

    def _feed_plain(self, data: bytes, start: int, stop: int, out: list[Message]) -> None:
        while start < stop:
            nl = data.find(b"\n", start, stop)
            if nl < 0:
                self._append(data, start, stop, out)
                return
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                if len(self._buffer) + (nl - start) > self.max_reply:
                    self._buffer.clear()
                    out.append(DecodeError(f"reply larger than {self.max_reply} bytes"))
                else:
                    self._buffer += data[start:nl]
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    self._emit(line, out)
            elif nl - start > self.max_reply:
                out.append(DecodeError(f"reply larger than {self.max_reply} bytes"))
            else:
                self._emit(data[start:nl], out)
            start = nl + 1

    def _append(self, data: bytes, start: int, stop: int, out: list[Message]) -> None:
        if self._discarding:
            return
        if len(self._buffer) + (stop - start) > self.max_reply:
            self._buffer.clear()
            self._discarding = True
            out.append(DecodeError(f"reply larger than {self.max_reply} bytes"))
            return
        self._buffer += data[start:stop]

    def _emit(self, line: bytes, out: list[Message]) -> None:
        line = line.strip()
        if not line:
            return
        if self.lazy and line.startswith(_RETURN_PREFIX):
            # qemu-ga writes `{"return": VALUE, "id": ID}`, or `{"return": VALUE}` when the
            # request had no id: keep VALUE's text undecoded.
            tail = _ID_TAIL.search(line, max(0, len(line) - 32))
            if tail is not None:
                out.append(Reply(int(tail.group(1)), body=line[len(_RETURN_PREFIX) : tail.start()]))
                return
            if line.endswith(b"}") and line.find(b', "id": ', max(0, len(line) - 48)) < 0:
                out.append(Reply(None, body=line[len(_RETURN_PREFIX) : -1]))
                return
        if line.count(b"[") + line.count(b"{") > self.max_depth and not _depth_within(
            line, self.max_depth
        ):
            out.append(DecodeError(f"reply nested deeper than {self.max_depth} levels"))
            return
        try:
            doc = json.loads(line)
        except RecursionError:
            out.append(DecodeError(f"reply nested deeper than {self.max_depth} levels"))
            return
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            out.append(DecodeError(f"invalid JSON from agent: {_short(exc)}"))
            return
        out.append(_to_message(doc))


_RETURN_PREFIX = b'{"return": '
_ID_TAIL = re.compile(rb', "id": (-?\d{1,19})\}$')


def decode_body(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The value of a lazy reply's `body`; ValueError if it is not sound JSON."""
    if body.count(b"[") + body.count(b"{") > max_depth and not _depth_within(body, max_depth):
        raise ValueError(f"reply nested deeper than {max_depth} levels")
    try:
        # What json.loads does with UTF-8 bytes, minus its encoding sniffing: every poll
        # decodes a reply or two.
        return _decode_json(body.decode("utf-8", "surrogatepass"))
    except RecursionError:
        raise ValueError(f"reply nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"invalid JSON from agent: {_short(exc)}") from None


_decode_json = json.JSONDecoder().decode


def _depth_within(line: bytes, limit: int) -> bool:
    """Exact nesting check outside strings; only run when a cheap bracket count is high."""
    depth = 0
    in_string = False
    escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def _to_message(doc: Any) -> Message:
    if not isinstance(doc, dict):
        return DecodeError(f"reply is a JSON {type(doc).__name__}, not an object")
    reply_id = doc.get("id")
    if "return" in doc:
        return Reply(reply_id, doc["return"])
    error = doc.get("error")
    if isinstance(error, dict):
        error_class = error.get("class")
        desc = error.get("desc")
        return Reply(
            reply_id,
            None,
            error_class if isinstance(error_class, str) else "GenericError",
            desc if isinstance(desc, str) else "the agent reported an error without a description",
        )
    return DecodeError("reply has neither 'return' nor 'error'")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."
