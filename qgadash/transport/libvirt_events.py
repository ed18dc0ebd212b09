"""Domain states as libvirt knows them, kept current by libvirt's lifecycle events.

An agent cannot say that its guest is paused, shut off or crashed: it just stops
answering. libvirt knows, and says when it changes. `virsh list --all` gives every
domain's state once (at each discovery); a long-lived `virsh event --event lifecycle
--loop` (a process of its own, local or an exec channel on the hypervisor's SSH
connection) then reports each change as it happens, and listeners hear of it at once,
so a suspended guest's row changes without waiting for a poll to time out. The event
process is restarted with backoff if it ends. Domain names are the administrator's,
matched against the discovered names; nothing in an event line is run or trusted beyond
being one of libvirt's known words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import Callable
from typing import Protocol

import asyncssh

from qgadash.agent.errors import AgentError
from qgadash.transport.shell import sh_command
from qgadash.transport.ssh.connection import SshConnection


class EventSource(Protocol):
    """What the watcher needs of its hypervisor (which builds it: a Protocol, not an
    import of transport/libvirt.py)."""

    uri: str
    connection: SshConnection | None

# The states of `virsh domstate` / `list --all` (virDomainState), as libvirt words them.
STATES = frozenset(
    {"running", "idle", "paused", "in shutdown", "shut off", "crashed", "dying", "pmsuspended"}
)
# Lifecycle event -> the state it leaves the domain in (Shutdown: still running until
# the Stopped that follows; Defined/Undefined change no state of a running domain).
EVENT_STATES = {
    "Started": "running",
    "Resumed": "running",
    "Suspended": "paused",
    "Stopped": "shut off",
    "Crashed": "crashed",
    "PMSuspended": "pmsuspended",
}
_EVENT = re.compile(
    r"^event 'lifecycle' for domain '(?P<name>.*)': (?P<event>\w+)(?: (?P<detail>.*))?$"
)
_LIST_ROW = re.compile(
    r"^\s*(?:\d+|-)\s+(?P<name>.+?)\s+(?P<state>"
    + "|".join(sorted(STATES, key=len, reverse=True))
    + r")\s*$"
)
_MAX_LINE = 4096
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0

Listener = Callable[[str, str], None]  # (domain name, state)


def parse_list_all(output: str) -> dict[str, str]:
    """Domain name -> state from `virsh list --all`'s table."""
    states: dict[str, str] = {}
    for line in output.splitlines():
        match = _LIST_ROW.match(line)
        if match:
            states[match.group("name")] = match.group("state")
    return states


def parse_event(line: str) -> tuple[str, str] | None:
    """(domain name, new state) from one line of `virsh event --event lifecycle`."""
    match = _EVENT.match(line.strip())
    if match is None:
        return None
    state = EVENT_STATES.get(match.group("event"))
    return None if state is None else (match.group("name"), state)


class DomainWatch:
    """One `virsh event --loop` per hypervisor, feeding `states` and the listeners."""

    def __init__(self, link: EventSource) -> None:
        self._link = link
        self.states: dict[str, str] = {}  # domain name -> state
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Set once the event process runs: what changes after this is reported.
        self.watching = asyncio.Event()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self.start()

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def set_states(self, states: dict[str, str]) -> None:
        """States from a `list --all` (discovery): the changes among them are reported."""
        for name, state in states.items():
            self._set(name, state)

    def _set(self, name: str, state: str) -> None:
        if self.states.get(name) == state:
            return
        self.states[name] = state
        for listener in list(self._listeners):
            listener(name, state)

    async def _run(self) -> None:
        failures = 0
        while not self._closed:
            try:
                await self._follow()
                failures = 0
            except (AgentError, OSError, asyncssh.Error):
                failures += 1
            self.watching.clear()
            if self._closed:
                return
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1)))

    async def _follow(self) -> None:
        argv = ["-c", self._link.uri, "event", "--event", "lifecycle", "--loop"]
        ssh = self._link.connection
        if ssh is None:
            process = await asyncio.create_subprocess_exec(
                "virsh", *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"},
            )  # fmt: skip
            assert process.stdout is not None
            try:
                await self._read(process.stdout)
            finally:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                await process.wait()
            return
        conn = await ssh.connection(20.0)
        sessions = await ssh.session_slot(20.0)
        try:
            words = " ".join(shlex.quote(a) for a in argv)
            remote = await conn.create_process(
                sh_command(f"LC_ALL=C exec virsh {words} 2>/dev/null"), encoding=None
            )
            try:
                await self._read(remote.stdout)
            finally:
                remote.close()
        finally:
            sessions.release()

    async def _read(self, stream: asyncio.StreamReader | asyncssh.SSHReader[bytes]) -> None:
        # virsh prints nothing until the first event: it is listening once started.
        self.watching.set()
        while not self._closed:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                return  # a line longer than the buffer: not virsh's; start over
            if len(line) > _MAX_LINE:
                continue
            event = parse_event(line.decode("utf-8", "replace"))
            if event is not None:
                self._set(*event)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
