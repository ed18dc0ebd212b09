"""The async agent client: a thin asyncio loop around the sans-IO `Session`.

One client owns one byte stream. Calls are serialised (the agent runs one command at a
time anyway) but several requests can go out in one write (`call_many`), which costs
one system call instead of three for a poll. Everything about the protocol (sync,
stale replies, matching replies in order, ids, old agents) is the session's; this
module writes, reads, keeps time and turns the session's events into results and
exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from qgadash.agent.codec import DEFAULT_MAX_REPLY, decode_body
from qgadash.agent.commands import ALWAYS_OFFERED, COMMAND_SINCE, version_text
from qgadash.agent.deadline import deadline
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnsupported,
)
from qgadash.agent.policy import NO_REPLY_COMMANDS, changes_guest
from qgadash.agent.replies import AgentInfo, parse_info
from qgadash.agent.session import (
    NO_ERROR_REPLY,
    AgentTraits,
    Done,
    Failed,
    Request,
    Runstate,
    Session,
    new_sync_id,
)
from qgadash.agent.stream import ByteStream
from qgadash.agent.trace import TracingStream

__all__ = [
    "NO_REPLY_COMMANDS",
    "AgentCaller",
    "AgentClient",
    "AgentTraits",
    "NoReplyOutcome",
    "Request",
    "new_sync_id",
    "unsupported_reason",
]

READ_CHUNK = 256 * 1024
# A reply longer than this is decoded in a worker thread: a file read or an exec's output
# near the 16 MiB reply cap (or a raised one) takes 50-300 ms of JSON decoding, which on
# the event loop would stall every other VM's polls and every thaw timer.
LARGE_REPLY = 1024 * 1024

log = logging.getLogger(__name__)


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

    async def call_many_raw(
        self, requests: Sequence[Request], *, timeout: float, read_only: bool = False
    ) -> list[Any | bytes | AgentError]:
        """As `call_many`, but a success may come back as its undecoded JSON text (bytes):
        the poller compares those with the last poll's and decodes only what changed.
        A caller that has no bytes (libvirt) returns values, as `call_many`."""
        ...

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome: ...

    @property
    def closed(self) -> bool: ...

    @property
    def note(self) -> str | None:
        """What the operator should know about this channel: how an old agent was adapted
        to, or that libvirt marked the domain tainted. None when nothing."""
        ...

    async def close(self) -> None: ...


def unsupported_reason(info: AgentInfo | None, name: str) -> str | None:
    """Why `name` must not be sent to the agent `info` describes, or None."""
    if info is None or name in ALWAYS_OFFERED or info.offers(name):
        return None
    since = COMMAND_SINCE.get(name)
    came = f" (it came with qemu-ga {version_text(since)})" if since else ""
    return f"this agent (qemu-ga {info.version}) has no {name}{came}"


class AgentClient:
    """The qemu-ga protocol over one `ByteStream`.

    `traits` is what is known about the agent from earlier connections (its endpoint
    keeps it): an agent that refused request ids is never sent one again.
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        max_reply: int = DEFAULT_MAX_REPLY,
        traits: AgentTraits | None = None,
    ) -> None:
        self._stream = stream
        self._session = Session(traits, max_reply=max_reply)
        self._lock = asyncio.Lock()
        self._closed = False
        self._info: tuple[Any, AgentInfo | None] = (None, None)

    @property
    def closed(self) -> bool:
        return self._closed

    def trace_as(self, label: str) -> None:
        """Log this channel's bytes as `label`'s (`--debug`; see agent/trace.py)."""
        if not isinstance(self._stream, TracingStream):
            self._stream = TracingStream(self._stream, label)

    @property
    def traits(self) -> AgentTraits:
        return self._session.traits

    @property
    def note(self) -> str | None:
        """How this agent was adapted to ("agent too old for request ids; ..."), if at all."""
        return self._session.traits.note

    async def sync(self, timeout: float) -> None:
        """Put the channel in a known state: 0xFF + guest-sync(-delimited), skip to its reply.

        Raises AgentTimeout, AgentProtocolError (garbage), AgentConnectionError."""
        async with self._lock:
            self._check_open()
            self._session.sync()
            await self._exchange("guest-sync-delimited", timeout)

    async def call(self, name: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """Run one command; its `return` value. Raises AgentCommandError (the agent
        refused; AgentUnsupported when it was not sent because the agent lacks it) or
        another AgentError."""
        await self._refuse_unsupported(name, args, timeout)
        result = (await self.call_many([(name, args)], timeout=timeout))[0]
        if isinstance(result, AgentError):
            raise result
        return result

    async def call_many(
        self, requests: Sequence[Request], *, timeout: float
    ) -> list[Any | AgentError]:
        """Send the requests in one write; each result is a value or an `AgentCommandError`.

        A timeout, a closed channel or garbage fail the whole batch (raised), since the
        channel's state is then unknown. A command that answers nothing on success may
        end the batch: its result is None unless the agent reports an error before
        `timeout` (`call_no_reply` waits a shorter grace period for one).
        """
        results = await self.call_many_raw(requests, timeout=timeout)
        return [
            (
                (await asyncio.to_thread(_decoded, r) if len(r) > LARGE_REPLY else _decoded(r))
                if isinstance(r, bytes)
                else r
            )
            for r in results
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
            if self._closed:
                raise AgentConnectionError("the connection to the agent is closed")
            if not requests:
                return []  # nothing to ask (to the session an empty batch is a sync)
            if not read_only:
                for name, _ in requests:
                    why = unsupported_reason(self._agent_info(), name)
                    if why is not None:
                        raise AgentUnsupported(name, why)
            session = self._session
            session.start(requests, read_only=read_only)
            note = session.traits.note
            # _exchange written out: one coroutine level less on every resumption of
            # every poll.
            try:
                with deadline(timeout):
                    results = await self._events()
            except TimeoutError:
                results = self._expired(_names(requests), timeout, note)
            except (OSError, EOFError) as exc:
                await self._abort()
                raise AgentConnectionError(f"connection lost: {exc}") from exc
        if results and results[-1] is NO_ERROR_REPLY:
            results[-1] = None
        return results

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome:
        """Send a command that is silent on success; an error reply within `grace` raises.

        Afterwards the channel is out of sync (the guest may be going away)."""
        await self._refuse_unsupported(name, args, grace * 4 + 1)
        async with self._lock:
            self._check_open()
            session = self._session
            session.start([(name, args)])
            try:
                # The request waits for the sync a fresh channel needs: the sync gets
                # its own, longer, deadline; `grace` starts once the request is out.
                with deadline(grace * 4 + 1):
                    await self._send_request()
            except TimeoutError:
                session.expire()
                raise AgentTimeout(f"no reply to the sync before {name}") from None
            except AgentError:
                raise
            except (OSError, EOFError) as exc:
                await self._abort()
                raise AgentConnectionError(f"connection lost: {exc}") from exc
            try:
                with deadline(grace):
                    result = (await self._events())[0]
            except TimeoutError:
                session.expire()
                return NoReplyOutcome.NO_ERROR
            except AgentConnectionError:
                await self._abort()
                return NoReplyOutcome.CHANNEL_CLOSED
            except AgentProtocolError:
                return NoReplyOutcome.NO_ERROR
            except (OSError, EOFError):
                await self._abort()
                return NoReplyOutcome.CHANNEL_CLOSED
        if isinstance(result, AgentCommandError):
            raise result
        if isinstance(result, AgentConnectionError):
            await self._abort()
            return NoReplyOutcome.CHANNEL_CLOSED
        return NoReplyOutcome.NO_ERROR

    async def close(self) -> None:
        await self._abort()

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AgentConnectionError("the connection to the agent is closed")

    async def _abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._session.close()
            # Closing a broken transport must not raise.
            with contextlib.suppress(Exception):
                self._stream.close()

    def _agent_info(self) -> AgentInfo | None:
        """The agent's last guest-info as seen on this channel or an earlier one."""
        raw = self._session.traits.info
        cached_raw, info = self._info
        if raw is cached_raw:
            return info
        try:
            info = parse_info(decode_body(raw) if isinstance(raw, bytes) else raw)
        except (ValueError, AgentError):
            info = None
        self._info = (raw, info)
        return info

    async def _refuse_unsupported(
        self, name: str, args: dict[str, Any] | None, timeout: float
    ) -> None:
        """Raise AgentUnsupported for a command this agent lacks. A command that changes
        the guest and is newer than the first agents is not sent blind: without a
        guest-info from this agent yet, read it first."""
        if (
            self._session.traits.info is None
            and changes_guest(name, args)
            and COMMAND_SINCE.get(name, (0, 15)) > (0, 15)
        ):
            with contextlib.suppress(AgentError):
                await self.call_many_raw([("guest-info", None)], timeout=timeout, read_only=True)
        why = unsupported_reason(self._agent_info(), name)
        if why is not None:
            raise AgentUnsupported(name, why)

    async def _exchange(self, what: str, timeout: float) -> list[Any]:
        """Run the session's queued batch to its end under `timeout`."""
        note = self._session.traits.note
        try:
            with deadline(timeout):
                return await self._events()
        except TimeoutError:
            return self._expired(what, timeout, note)
        except (OSError, EOFError) as exc:
            await self._abort()
            raise AgentConnectionError(f"connection lost: {exc}") from exc

    def _expired(self, what: str, timeout: float, note: str | None) -> list[Any]:
        """The batch's deadline passed: its results if only a no-reply command's error
        was still awaited, else the timeout (or garbage) error, raised."""
        session = self._session
        sent = session.request_sent
        done = session.expire()
        if done is not None:
            return done.results
        if not sent:  # stuck in the sync: nothing of ours went out
            what = f"the sync before {what} (not sent)"
        error = self._timeout_error(what, timeout, note)
        error.request_sent = sent
        raise error from None

    async def _events(self) -> list[Any]:
        """Write what the session has to send, read until it settles the batch. (A batch
        starts with nothing received pending: the session guarantees it.)"""
        session = self._session
        stream = self._stream
        data = session.data_to_send()
        if data:
            stream.write(data)
            await stream.drain()
        while True:
            event = session.receive(await stream.read(READ_CHUNK))
            data = session.data_to_send()
            if data:
                stream.write(data)
                await stream.drain()
            if type(event) is Done:
                return event.results
            if type(event) is Failed:
                if session.state is Runstate.CLOSED:
                    await self._abort()
                raise event.error

    async def _send_request(self) -> None:
        """Run the session until the queued request has been written (after its sync)."""
        session = self._session
        stream = self._stream
        while True:
            event = session.next_event()
            data = session.data_to_send()
            if data:
                stream.write(data)
                await stream.drain()
            if type(event) is Done:
                return
            if type(event) is Failed:
                if session.state is Runstate.CLOSED:
                    await self._abort()
                raise event.error
            if session.request_sent:
                return
            session.receive_data(await stream.read(READ_CHUNK))

    def _timeout_error(self, what: str, timeout: float, note_before: str | None) -> AgentError:
        """A timeout, or garbage if the agent talked but never sensibly; prefixed with
        how the agent was adapted to during this call, which is the likelier story."""
        noise = self._session.noise
        if noise is not None:
            return AgentProtocolError(f"garbage from the agent instead of a reply ({noise})")
        note = self._session.traits.note
        prefix = f"{note}; then " if note is not None and note != note_before else ""
        return AgentTimeout(f"{prefix}no reply to {what} within {timeout:g} s")


def _decoded(body: bytes) -> Any:
    try:
        return decode_body(body)
    except ValueError as exc:
        return AgentProtocolError(str(exc))


def _names(requests: Sequence[Request]) -> str:
    names = [name for name, _ in requests]
    return names[0] if len(names) == 1 else ", ".join(names)
