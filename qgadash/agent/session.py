"""The qemu-ga protocol as a state machine: requests and bytes in, bytes and events out.

No sockets and no clock here (h11's shape): the async client feeds what it reads to
`receive_data`, writes what `data_to_send` returns, and asks `next_event` what happened.
Everything that keeps a channel honest lives in this one object:

- **Sync.** A fresh channel, or one whose state is unknown (a timeout, garbage, a
  no-reply command), is synced first: 0xFF, then guest-sync-delimited (guest-sync for
  qemu-ga 1.0, which lacks it) with a random id. Everything before the reply carrying
  that id is stale and skipped; a 0xFF from the agent drops a half-read reply.
- **Matching in order.** The agent runs one command at a time and answers in request
  order, so the n-th reply after the sync belongs to the n-th request. Request ids are
  only a check on top: sent where the agent is known to echo them, and a reply whose id
  is not the one expected is stale and dropped.
- **Ids, learnt per agent.** qemu-ga before 2.12 refuses any request member besides
  `execute` and `arguments` ("QMP input object member 'id' is unexpected"); 2.12 takes
  ids without echoing them; 3.0 and later echo them. The first sync carries an id to
  find out; what is learnt (`AgentTraits`) is kept by the caller across connections, so
  an agent that refused ids never gets one again.
- **No-reply commands** (shutdown, suspend) answer only errors: they may only end a
  batch, and the batch ends on their error, on the caller's `expire` (grace over: no
  error) or on the channel closing (the guest went away).

A batch whose requests only read (`read_only`) goes out in the same write as the sync
it needs; any other waits for the sync's reply, so a request that changes the guest
never enters a channel not known to be in sync.

Over 500 lines on purpose: the whole protocol state machine (sync handshake, request
ids or none, stale replies, resync after a timeout) is one object whose parts share
its state, as h11 keeps its connection in one module.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from qgadash.agent.codec import (
    DEFAULT_MAX_REPLY,
    DecodeError,
    Decoder,
    Reply,
    encode_request,
    encode_sync,
)
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
)
from qgadash.agent.policy import NO_REPLY_COMMANDS

__all__ = [
    "NEED_DATA",
    "NO_ERROR_REPLY",
    "AgentTraits",
    "Done",
    "Failed",
    "IdMode",
    "NeedData",
    "Request",
    "Runstate",
    "Session",
    "new_sync_id",
]

Request = tuple[str, dict[str, Any] | None]

IDS_REFUSED_NOTE = "agent too old for request ids; retrying without"
PLAIN_SYNC_NOTE = "agent too old for guest-sync-delimited (qemu-ga 1.0); syncing with guest-sync"


class Runstate(enum.Enum):
    UNSYNCED = "unsynced"  # fresh, or its state unknown: the next batch syncs first
    SYNCING = "syncing"  # a sync is out; everything before its reply is stale
    READY = "ready"  # in sync, nothing outstanding
    BUSY = "busy"  # in sync, a batch is out
    CLOSED = "closed"


class IdMode(enum.Enum):
    """What an agent does with a request id."""

    UNKNOWN = "unknown"  # not learnt yet: the next sync carries one to find out
    ECHOED = "echoed"  # qemu-ga 3.0+: ids are sent and each reply checked against its own
    IGNORED = "ignored"  # qemu-ga 2.12: accepted, never echoed (so not sent: no use)
    REFUSED = "refused"  # qemu-ga < 2.12: "member 'id' is unexpected"; never sent again


@dataclass(slots=True)
class AgentTraits:
    """What was learnt about one agent; outlives a connection (an endpoint keeps it)."""

    ids: IdMode = IdMode.UNKNOWN
    delimited_sync: bool = True  # False: qemu-ga 1.0, sync with guest-sync
    note: str | None = None  # one line for people: how this agent was adapted to
    info: Any = None  # its last guest-info reply (raw JSON bytes, or the decoded value)


class NeedData:
    """`next_event` found nothing complete: read more and `receive_data` it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class _NoErrorReply:
    """The result of a no-reply command that sent no error before `expire`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ERROR_REPLY"


NO_ERROR_REPLY: Final = _NoErrorReply()


class Done:
    """The batch is answered: one result per request, in order. A result is the reply's
    `return` value (its JSON text as bytes when it came undecoded), an
    `AgentCommandError` for an error reply, or `NO_ERROR_REPLY` (a no-reply command
    that said nothing) / `AgentConnectionError` (the channel closed after it)."""

    __slots__ = ("results",)

    def __init__(self, results: list[Any]) -> None:
        self.results = results

    def __repr__(self) -> str:
        return f"Done({self.results!r})"


class Failed:
    """The batch failed as a whole (garbage, the channel closed, a lost reply)."""

    __slots__ = ("error",)

    def __init__(self, error: AgentError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


Event = NeedData | Done | Failed


def new_sync_id() -> int:
    """A random id that fits a signed 64-bit integer, as the agent requires."""
    return random.randint(1, 2**63 - 1)


def _refuses_ids(desc: str | None) -> bool:
    return desc is not None and "'id' is unexpected" in desc


def _lacks(desc: str | None, command: str) -> bool:
    return desc is not None and command in desc and "not been found" in desc


class Session:
    """One channel to one agent. Not thread- or task-safe: one batch at a time."""

    __slots__ = (
        "_batch",
        "_decoder",
        "_eof",
        "_expected",
        "_ids",
        "_info_at",
        "_messages",
        "_next",
        "_noise",
        "_out",
        "_pos",
        "_probe",
        "_read_only",
        "_request_ids",
        "_results",
        "_sent",
        "_sync_body",
        "_sync_id",
        "_sync_ids",
        "state",
        "traits",
    )

    def __init__(
        self,
        traits: AgentTraits | None = None,
        *,
        max_reply: int = DEFAULT_MAX_REPLY,
        sync_ids: Any = None,
    ) -> None:
        """`sync_ids`: where sync ids come from (an iterator of ints; tests pin them)."""
        self.traits = traits if traits is not None else AgentTraits()
        self.state = Runstate.UNSYNCED
        self._decoder = Decoder(max_reply=max_reply, lazy=True)
        self._ids = itertools.count(random.randint(1, 2**40))
        self._sync_ids = sync_ids
        self._out = b""
        self._messages: list[Reply | DecodeError] = []
        self._pos = 0
        self._eof = False
        self._batch: Sequence[Request] = ()
        self._request_ids: list[int | None] = []
        self._results: list[Any] = []
        self._next = 0
        self._expected = 0  # replies that must come (a trailing no-reply command excluded)
        self._read_only = False
        self._sent = False
        self._info_at = -1
        self._sync_id = 0
        self._sync_body = b""
        self._probe: int | None = None
        self._noise: str | None = None

    # -- what the caller does ------------------------------------------------------------

    @property
    def request_sent(self) -> bool:
        """Whether the current batch's requests have been handed to `data_to_send`."""
        return self._sent

    @property
    def noise(self) -> str | None:
        """The last undecodable bytes skipped while syncing (a timeout is then garbage)."""
        return self._noise

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete reply held by the decoder."""
        return self._decoder.buffered

    def start(self, requests: Sequence[Request], *, read_only: bool = False) -> None:
        """Queue a batch; its bytes (and a sync first, if needed) come from `data_to_send`.

        Raises ValueError when a command that answers nothing on success is not last:
        whatever followed it would be matched with the wrong replies, or go to a guest
        that is shutting down. An empty batch is a sync (in sync too: sent as is, it
        would wait for a reply that never comes)."""
        state = self.state
        if state is Runstate.CLOSED:
            raise AgentConnectionError("the connection to the agent is closed")
        if state is Runstate.BUSY or state is Runstate.SYNCING:
            raise RuntimeError(f"a batch is already out (session {state.value})")
        n = len(requests)
        expected = n
        info_at = -1
        for i, (name, _) in enumerate(requests):  # one pass: runs for every poll of every VM
            if name in NO_REPLY_COMMANDS:
                if i != n - 1:
                    raise ValueError(
                        f"{name} answers nothing on success: it can only be the last request"
                    )
                expected = n - 1
            elif name == "guest-info":
                info_at = i
        self._batch = requests
        self._results = [None] * n
        self._next = 0
        self._expected = expected
        self._read_only = read_only
        self._sent = False
        self._info_at = info_at
        if state is Runstate.READY and n:
            self._send_batch()
            self.state = Runstate.BUSY
            return
        self._begin_sync()
        if read_only:
            self._send_batch()

    def sync(self) -> None:
        """Sync now, with no requests (a `Done([])` when it is answered)."""
        if self.state is Runstate.CLOSED:
            raise AgentConnectionError("the connection to the agent is closed")
        if self.state is Runstate.BUSY or self.state is Runstate.SYNCING:
            raise RuntimeError(f"a batch is already out (session {self.state.value})")
        self.state = Runstate.UNSYNCED
        self.start(())

    def data_to_send(self) -> bytes:
        """Bytes to write to the agent now (empty if none)."""
        data = self._out
        self._out = b""
        return data

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the agent; `b""` when the channel closed."""
        if not data:
            self._eof = True
            return
        messages = self._decoder.feed(data)
        if messages:
            if self._pos >= len(self._messages):
                self._messages = messages
                self._pos = 0
            else:
                self._messages += messages

    def receive(self, data: bytes) -> Event:
        """`receive_data(data)`, then `next_event()`: the poll path's one call per read."""
        self.receive_data(data)
        return self.next_event()

    def next_event(self) -> Event:
        """What the bytes received so far settle: `Done`, `Failed` or `NEED_DATA`."""
        messages = self._messages
        while self._pos < len(messages):
            message = messages[self._pos]
            self._pos += 1
            state = self.state
            if state is Runstate.BUSY:
                # The common case written out (every reply of every poll): the reply we
                # expect next, with the id we expect (None for agents sent none).
                i = self._next
                if (
                    type(message) is Reply
                    and message.id == self._request_ids[i]
                    and message.error_class is None
                ):
                    body = message.body
                    result = body if body is not None else message.value
                    self._results[i] = result
                    if i == self._info_at:
                        self.traits.info = result
                    i += 1
                    self._next = i
                    if i == len(self._batch):
                        return self._finish()
                    continue
                event = self._on_reply(message)
                if event is not None:
                    return event
            elif state is Runstate.SYNCING:
                event = self._on_sync_message(message)
                if event is not None:
                    return event
            elif state is Runstate.READY:
                # A reply nobody asked for: the channel is not what we think.
                self.state = Runstate.UNSYNCED
        if self._eof:
            return self._closed()
        return NEED_DATA

    def expire(self) -> Done | None:
        """The caller's deadline passed. A batch whose only missing answer is a
        no-reply command's is done (no error within the grace period); anything else is
        lost. Either way the channel's state is unknown: the next batch syncs first."""
        if self.state is Runstate.CLOSED:
            return None
        done = None
        if self.state is Runstate.BUSY and self._waits_only_for_no_reply():
            self._results[-1] = NO_ERROR_REPLY
            done = Done(self._results)
        self._forget_batch()
        self.state = Runstate.UNSYNCED
        return done

    def close(self) -> None:
        self.state = Runstate.CLOSED
        self._forget_batch()

    # -- internals -------------------------------------------------------------------------

    def _send_batch(self) -> None:
        batch = self._batch
        ids: list[int | None]
        if self.traits.ids is IdMode.ECHOED:
            counter = self._ids
            ids = [next(counter) for _ in batch]
        else:
            ids = [None] * len(batch)
        self._request_ids = ids
        if batch:
            self._out += b"".join(
                [encode_request(n, a, rid) for (n, a), rid in zip(batch, ids, strict=True)]
            )
        self._sent = True

    def _begin_sync(self) -> None:
        """Forget what was half-read and send a fresh sync."""
        self._decoder.reset()
        self._messages = []
        self._pos = 0
        self._noise = None
        sync_id = next(self._sync_ids) if self._sync_ids is not None else new_sync_id()
        self._sync_id = sync_id
        self._sync_body = b"%d" % sync_id
        traits = self.traits
        self._probe = sync_id if traits.ids is IdMode.UNKNOWN else None
        self._out += encode_sync(sync_id, delimited=traits.delimited_sync, probe_id=self._probe)
        self.state = Runstate.SYNCING

    def _restart_sync(self, note: str, *, resend: bool) -> None:
        """The agent refused the form of what we sent: note why and sync again. With
        `resend` the batch goes out again right behind the sync (read-only requests:
        the agent answered the first ones out of sync, or refused them); otherwise it
        waits for the sync's reply."""
        self.traits.note = note
        messages, pos = self._messages, self._pos
        self._begin_sync()
        # What follows in the same read answers the first attempt: stale, and skipped
        # as such by waiting for the new sync's reply, so keep it in the queue.
        self._messages, self._pos = messages, pos
        self._sent = False
        self._next = 0
        self._results = [None] * len(self._batch)
        if resend:
            self._send_batch()

    def _on_sync_message(self, message: Reply | DecodeError) -> Event | None:
        if isinstance(message, DecodeError):
            self._noise = message.reason
            return None
        if message.error_class is None:
            if message.body == self._sync_body or (
                message.body is None and message.value == self._sync_id
            ):
                return self._synced(message)
            return None  # a stale reply
        traits = self.traits
        desc = message.desc
        if self._probe is not None and _refuses_ids(desc):
            traits.ids = IdMode.REFUSED
            self._restart_sync(IDS_REFUSED_NOTE, resend=self._sent)
        elif traits.delimited_sync and _lacks(desc, "guest-sync-delimited"):
            traits.delimited_sync = False
            self._restart_sync(PLAIN_SYNC_NOTE, resend=self._sent)
        elif not traits.delimited_sync and _lacks(desc, "guest-sync"):
            self._forget_batch()
            self.state = Runstate.UNSYNCED
            return Failed(
                AgentProtocolError(
                    "the agent knows neither guest-sync-delimited nor guest-sync "
                    f"(not a qemu-ga?): {desc}"
                )
            )
        # Anything else is an earlier client's error, or the answer to our 0xFF.
        return None

    def _synced(self, reply: Reply) -> Event | None:
        traits = self.traits
        if self._probe is not None:
            traits.ids = IdMode.ECHOED if reply.id == self._probe else IdMode.IGNORED
            self._probe = None
        if not self._sent:
            self._send_batch()
        if not self._batch:
            self._forget_batch()
            self.state = Runstate.READY
            return Done([])
        self.state = Runstate.BUSY
        return None

    def _on_reply(self, message: Reply | DecodeError) -> Event | None:
        if isinstance(message, DecodeError):
            self._forget_batch()
            self.state = Runstate.UNSYNCED
            return Failed(AgentProtocolError(message.reason))
        i = self._next
        if i >= len(self._batch):
            self.state = Runstate.UNSYNCED  # more replies than requests
            return None
        want = self._request_ids[i]
        rid = message.id
        if rid != want:
            return self._mismatch(message, i, want)
        name = self._batch[i][0]
        if message.error_class is not None:
            result: Any = AgentCommandError(message.error_class, message.desc or "", name)
        elif message.body is not None:
            result = message.body
        else:
            result = message.value
        self._results[i] = result
        if i == self._info_at and message.error_class is None:
            self.traits.info = result
        self._next = i + 1
        if self._next >= len(self._batch):
            return self._finish()
        return None

    def _mismatch(self, message: Reply, i: int, want: int | None) -> Event | None:
        """A reply whose id is not the expected one: stale, refused, or a lost reply."""
        rid = message.id
        if want is None:
            return None  # we sent no id: a reply carrying one is not ours
        if rid is None:
            if _refuses_ids(message.desc):
                # The agent was replaced by one that refuses ids: the request did not
                # run, so send the batch again, without ids, after a fresh sync.
                self.traits.ids = IdMode.REFUSED
                self._restart_sync(IDS_REFUSED_NOTE, resend=self._read_only)
            return None  # an id-less parse error: not an answer to our requests
        if rid in self._request_ids[i + 1 :]:
            name = self._batch[i][0]
            self._forget_batch()
            self.state = Runstate.UNSYNCED
            return Failed(
                AgentProtocolError(f"no reply to {name}: the agent answered a later request")
            )
        return None  # stale (an earlier batch's id) or made up

    def _waits_only_for_no_reply(self) -> bool:
        return self._expected < len(self._batch) and self._next == self._expected

    def _finish(self) -> Event:
        # The batch's members stay as they are: `start` replaces them, and nothing reads
        # them outside BUSY.
        results = self._results
        no_reply = self._expected < len(self._batch)
        if no_reply or self._pos < len(self._messages):
            # After shutdown or suspend the guest may be going away; and replies beyond
            # the batch mean the channel is not what we think: sync before the next one.
            self.state = Runstate.UNSYNCED
        else:
            self.state = Runstate.READY
        return Done(results)

    def _closed(self) -> Event:
        if self.state is Runstate.BUSY and self._waits_only_for_no_reply():
            self._results[-1] = AgentConnectionError("the agent's channel closed")
            done = Done(self._results)
            self._forget_batch()
            self.state = Runstate.CLOSED
            return done
        partial = self._decoder.buffered
        self._forget_batch()
        self.state = Runstate.CLOSED
        if partial:
            return Failed(
                AgentProtocolError(
                    f"the agent closed the channel in the middle of a reply ({partial} bytes)"
                )
            )
        return Failed(AgentConnectionError("the agent's channel closed"))

    def _forget_batch(self) -> None:
        self._batch = ()
        self._request_ids = []
        self._results = []
        self._next = 0
        self._expected = 0
