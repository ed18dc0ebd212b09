"""One VM's agent session: held (one connection kept) or per-poll (connect, sync, run, close).

Every use of the agent goes through `VmSession.run`, which serialises requests to one
agent (it runs one command at a time anyway) and owns the connection's lifecycle, so
polls and actions never trip over each other's bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from qgadash.agent.client import AgentCaller, AgentClient
from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.agent.trace import CHANNEL_LOG
from qgadash.fleet.model import SessionMode, VmRef
from qgadash.transport.base import Endpoint

T = TypeVar("T")


class VmSession:
    def __init__(self, ref: VmRef, endpoint: Endpoint) -> None:
        self.ref = ref
        self.endpoint = endpoint
        self._caller: AgentCaller | None = None
        self._lock = asyncio.Lock()
        self.failures = 0  # consecutive failed uses, for backoff
        self.note: str | None = None  # the caller's note after its last successful use
        self.on_note: Callable[[str | None], None] | None = None  # told when it changes

    @property
    def held(self) -> bool:
        return self.ref.session is SessionMode.HELD

    async def run(self, work: Callable[[AgentCaller], Awaitable[T]], connect_timeout: float) -> T:
        """Run `work` with a connected, in-sync caller; errors are `AgentError`s."""
        async with self._lock:
            caller = self._caller
            if caller is None or caller.closed:
                try:
                    caller = await self.endpoint.connect(connect_timeout)
                except AgentError as exc:
                    self.failures += 1
                    exc.request_sent = False
                    raise
                if CHANNEL_LOG.isEnabledFor(logging.DEBUG) and isinstance(caller, AgentClient):
                    caller.trace_as(self.ref.id)
                self._caller = caller
            try:
                result = await work(caller)
            except AgentConnectionError:
                self._caller = None
                await caller.close()
                self.failures += 1
                raise
            except AgentError:
                self.failures += 1
                if not self.held:
                    self._caller = None
                    await caller.close()
                raise
            except BaseException:
                # Cancelled mid-request: the channel's state is unknown, start afresh.
                self._caller = None
                await asyncio.shield(caller.close())
                raise
            self.failures = 0
            note = caller.note
            if note != self.note:
                self.note = note
                if self.on_note is not None:
                    self.on_note(note)
            if not self.held:
                self._caller = None
                await caller.close()
            return result

    async def close(self) -> None:
        caller, self._caller = self._caller, None
        if caller is not None:
            await caller.close()
