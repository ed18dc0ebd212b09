"""The async agent client: sync, request/response, timeouts, no-reply commands.

One client owns one byte stream. Calls are serialised (the agent runs one command at a
time anyway) but several requests can go out in one write (`call_many`), which costs
one system call instead of three for a poll. Replies are matched by id; anything else
(stale replies of earlier clients, parse errors) is dropped. After a timeout or a
decode error the client resynchronises before its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import random
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

from qgadash.agent.codec import (
    DEFAULT_MAX_REPLY,
    DecodeError,
    Decoder,
    Reply,
    decode_body,
    encode_request,
    encode_sync,
)
from qgadash.agent.deadline import deadline
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
)
from qgadash.transport.base import ByteStream

NO_REPLY_COMMANDS = frozenset(
    {"guest-shutdown", "guest-suspend-ram", "guest-suspend-disk", "guest-suspend-hybrid"}
)
READ_CHUNK = 256 * 1024

Request = tuple[str, dict[str, Any] | None]


class NoReplyOutcome(enum.Enum):
    """What is known after a command that answers nothing on success."""

    NO_ERROR = "no error within the grace period"
    CHANNEL_CLOSED = "the channel closed (the guest went away)"


class AgentCaller(Protocol):
    """Anything that runs agent commands for one VM: a socket client or libvirt."""

    async def call(
        self, name: str, args: dict[str, Any] | None = None, *, timeout: float
    ) -> Any: ...

    async def call_many(
        self, requests: Sequence[Request], *, timeout: float
    ) -> list[Any | AgentError]: ...

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome: ...

    @property
    def closed(self) -> bool: ...

    async def close(self) -> None: ...


def new_sync_id() -> int:
    """A random id that fits a signed 64-bit integer, as the agent requires."""
    return random.randint(1, 2**63 - 1)


class AgentClient:
    """The qemu-ga protocol over one `ByteStream`."""

    def __init__(self, stream: ByteStream, *, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self._stream = stream
        self._decoder = Decoder(max_reply=max_reply, lazy=True)
        self._lock = asyncio.Lock()
        self._ids = itertools.count(random.randint(1, 2**40))
        self._in_sync = False
        self._closed = False
        self._pending: list[Reply | DecodeError] = []
        self._noise: str | None = None  # the last undecodable bytes seen while syncing

    @property
    def closed(self) -> bool:
        return self._closed

    async def sync(self, timeout: float) -> None:
        """Put the channel in a known state: 0xFF + guest-sync-delimited, skip to its reply."""
        async with self._lock:
            await self._sync(timeout)

    async def call(self, name: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Run one command; its `return` value, or an `AgentError`."""
        result = (await self.call_many([(name, args)], timeout=timeout))[0]
        if isinstance(result, AgentError):
            raise result
        return result

    async def call_many(
        self, requests: Sequence[Request], *, timeout: float
    ) -> list[Any | AgentError]:
        """Send the requests in one write; each result is a value or an `AgentCommandError`.

        A timeout, a closed channel or garbage fail the whole batch (raised), since the
        channel's state is then unknown.
        """
        return [
            _decoded(r) if isinstance(r, bytes) else r
            for r in await self.call_many_raw(requests, timeout=timeout)
        ]

    async def call_many_raw(
        self, requests: Sequence[Request], *, timeout: float, read_only: bool = False
    ) -> list[Any | bytes | AgentError]:
        """As `call_many`, but a success may come back as its undecoded JSON text (bytes).

        Pollers compare those bytes with the last poll's and decode only what changed;
        `qgadash.agent.codec.decode_body` turns them into a value.

        `read_only` requests (a poll) may go out in the same write as the sync that a
        fresh or confused channel needs, which saves a round trip on every per-poll
        session; anything else waits for the sync's reply, so that a request that
        changes the guest never goes into a channel not known to be in sync.
        """
        async with self._lock:
            self._check_open()
            sent = False
            try:
                with deadline(timeout):
                    ids = [next(self._ids) for _ in requests]
                    payload = b"".join(
                        encode_request(name, args, rid)
                        for (name, args), rid in zip(requests, ids, strict=True)
                    )
                    sync_id = None
                    if not self._in_sync:
                        if read_only:
                            sync_id = self._start_sync()
                            payload = encode_sync(sync_id) + payload
                        else:
                            await self._sync_unlocked()
                    self._stream.write(payload)
                    sent = True
                    await self._stream.drain()
                    if sync_id is not None:
                        await self._await_sync(sync_id, keep_rest=True)
                    replies = await self._collect(ids)
            except TimeoutError:
                self._in_sync = False
                what = _names(requests)
                if not sent:  # stuck in the resync: nothing of ours went out
                    what = f"the resync before {what} (not sent)"
                error = self._timeout_error(what, timeout)
                error.request_sent = sent
                raise error from None
            except AgentProtocolError:
                self._in_sync = False
                raise
            except (OSError, EOFError) as exc:
                await self._abort()
                raise AgentConnectionError(f"connection lost: {exc}") from exc
        results: list[Any | bytes | AgentError] = []
        for (name, _), rid in zip(requests, ids, strict=True):
            reply = replies[rid]
            if not reply.ok:
                results.append(
                    AgentCommandError(reply.error_class or "GenericError", reply.desc or "", name)
                )
            elif reply.body is not None:
                results.append(reply.body)
            else:
                results.append(reply.value)
        return results

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome:
        """Send a command that is silent on success; an error reply within `grace` raises.

        Afterwards the channel is out of sync (the guest may be going away).
        """
        async with self._lock:
            self._check_open()
            rid = next(self._ids)
            try:
                with deadline(grace * 4 + 1):
                    if not self._in_sync:
                        await self._sync_unlocked()
                self._stream.write(encode_request(name, args, rid))
                await self._stream.drain()
            except TimeoutError:
                self._in_sync = False
                raise AgentTimeout(f"no reply to the sync before {name}") from None
            except (OSError, EOFError) as exc:
                await self._abort()
                raise AgentConnectionError(f"connection lost: {exc}") from exc
            self._in_sync = False
            try:
                with deadline(grace):
                    reply = (await self._collect([rid]))[rid]
            except TimeoutError:
                return NoReplyOutcome.NO_ERROR
            except (AgentConnectionError, OSError, EOFError):
                await self._abort()
                return NoReplyOutcome.CHANNEL_CLOSED
            except AgentProtocolError:
                return NoReplyOutcome.NO_ERROR
            if reply.ok:
                return NoReplyOutcome.NO_ERROR
            raise AgentCommandError(reply.error_class or "GenericError", reply.desc or "", name)

    async def close(self) -> None:
        await self._abort()

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AgentConnectionError("the connection to the agent is closed")

    async def _abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._in_sync = False
            # Closing a broken transport must not raise.
            with contextlib.suppress(Exception):
                self._stream.close()

    async def _sync(self, timeout: float) -> None:
        self._check_open()
        try:
            with deadline(timeout):
                await self._sync_unlocked()
        except TimeoutError:
            raise self._timeout_error("guest-sync-delimited", timeout) from None
        except (OSError, EOFError) as exc:
            await self._abort()
            raise AgentConnectionError(f"connection lost: {exc}") from exc

    def _timeout_error(self, what: str, timeout: float) -> AgentError:
        """A timeout, or garbage if the agent talked but never sensibly."""
        if self._noise is not None:
            return AgentProtocolError(f"garbage from the agent instead of a reply ({self._noise})")
        return AgentTimeout(f"no reply to {what} within {timeout:g} s")

    async def _sync_unlocked(self) -> None:
        sync_id = self._start_sync()
        self._stream.write(encode_sync(sync_id))
        await self._stream.drain()
        await self._await_sync(sync_id, keep_rest=False)

    def _start_sync(self) -> int:
        """Forget what was half-read; the id of the sync about to be sent."""
        self._pending.clear()
        self._decoder.reset()
        self._noise = None
        return new_sync_id()

    async def _await_sync(self, sync_id: int, *, keep_rest: bool) -> None:
        """Skip everything up to the sync's reply (stale replies, noise: remembered as
        such). What follows it in the same read is kept only when requests went out
        right behind the sync (`keep_rest`); otherwise it belongs to nobody."""
        while True:
            messages = await self._read_messages()
            for i, message in enumerate(messages):
                if isinstance(message, DecodeError):
                    self._noise = message.reason
                elif message.ok and message.value == sync_id:
                    self._in_sync = True
                    if keep_rest:
                        self._pending = messages[i + 1 :]
                    return

    async def _collect(self, ids: list[int]) -> dict[int, Reply]:
        # Reads for itself rather than through _read_messages: one coroutine less to
        # pass through on every resumption of every poll.
        wanted = set(ids)
        got: dict[int, Reply] = {}
        while wanted:
            if self._pending:
                messages, self._pending = self._pending, []
            else:
                data = await self._stream.read(READ_CHUNK)
                if not data:
                    await self._channel_closed()
                messages = self._decoder.feed(data)
            for message in messages:
                if isinstance(message, DecodeError):
                    raise AgentProtocolError(message.reason)
                if message.id in wanted:
                    wanted.discard(message.id)
                    got[message.id] = message
        return got

    async def _read_messages(self) -> list[Reply | DecodeError]:
        while True:
            if self._pending:
                messages, self._pending = self._pending, []
                return messages
            data = await self._stream.read(READ_CHUNK)
            if not data:
                await self._channel_closed()
            messages = self._decoder.feed(data)
            if messages:
                return messages

    async def _channel_closed(self) -> NoReturn:
        """The agent's end closed: mid-reply is garbage, between replies a lost channel."""
        partial = self._decoder.buffered
        await self._abort()
        if partial:
            raise AgentProtocolError(
                f"the agent closed the channel in the middle of a reply ({partial} bytes)"
            )
        raise AgentConnectionError("the agent's channel closed")


def _decoded(body: bytes) -> Any:
    try:
        return decode_body(body)
    except ValueError as exc:
        return AgentProtocolError(str(exc))


def _names(requests: Sequence[Request]) -> str:
    names = [name for name, _ in requests]
    return names[0] if len(names) == 1 else ", ".join(names)
