"""One simulated qemu-ga: a sans-IO state machine.

`GuestAgent.receive(bytes)` returns what the agent does next, in order: bytes to send,
`Pause(seconds)`, `Stream(chunks)` for replies too large to build, `Close()` and
`PowerOff()`. The asyncio shell in `fleet.py` carries those out. Nothing here touches a
socket, so a fleet of 10,000 agents costs a few dicts each and every edge case is a
two-line test.

Replies follow qemu-ga 7.2: member names and order, error classes and texts, `%.17g`
floats, no reply to guest-shutdown and guest-suspend-*, 0xFF before the
guest-sync-delimited reply, the frozen-state allow list. The profile's agent version
picks the era, as a real agent of that version would answer (see `_SINCE` and `_Era`):
the commands it has and how guest-info lists them, whether a request id is refused
(before 2.12), taken silently (2.12) or echoed (3.0 on), the error texts of the time,
and the reply members each era had (NIC statistics from 2.11, disk use in
guest-get-fsinfo from 3.0, guest-fstrim's per-path results from 2.4).

The commands live by area in `qgadash.sim.commands` (info, hardware, stats, admin, freeze,
power, files, processes), each a mixin over `AgentState` (the state every area reads) with a
table of its handlers; this module is the dispatch: parse, check, run, reply, faults.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from qgadash.sim.commands import admin, files, freeze, hardware, info, power, processes, stats
from qgadash.sim.commands.faults import (
    FF_FLOOD,
    GARBAGE,
    INVALID_BYTES,
    INVALID_MARK_JSON,
    deep_reply,
    endless,
    huge_reply,
    out_of_range,
    oversize_reply,
)
from qgadash.sim.commands.schema import (
    NO_REPLY,
    SCHEMAS,
    SYNC_COMMANDS,
    CommandError,
    check_args,
    is_int,
)
from qgadash.sim.profiles import Fault, GuestProfile
from qgadash.sim.wire import JsonError, dumps, wrap_floats

__all__ = [
    "Close",
    "GuestAgent",
    "Output",
    "Pause",
    "PowerOff",
    "Stream",
]

# --- what the shell is asked to do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait before carrying out the next output (the agent is busy or slow)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stream:
    """Send these chunks one by one, with back-pressure; stop if the client leaves."""

    chunks: Iterable[bytes]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client's connection."""


@dataclass(frozen=True, slots=True)
class PowerOff:
    """The VM is gone: close the connection and stop listening."""


Output = bytes | Pause | Stream | Close | PowerOff

# SLOW: every reply this late. A default poll pipelines up to 11 requests, so a poll
# takes 1-2.5 s: far slower than a healthy agent, still inside the 3 s timeout (an agent
# that is slow but working, which the dashboard shows by its round-trip time).
SLOW_REPLY_DELAY = 0.2


# --- the agent ------------------------------------------------------------------------------


class GuestAgent(
    info.InfoCommands,
    hardware.HardwareCommands,
    stats.StatsCommands,
    admin.AdminCommands,
    freeze.FreezeCommands,
    power.PowerCommands,
    files.FileCommands,
    processes.ExecCommands,
):
    """One simulated agent, fed with request bytes (its state: `AgentState`)."""

    __slots__ = ()

    # -- public --------------------------------------------------------------------------

    @property
    def profile(self) -> GuestProfile:
        return self._profile

    @property
    def fault(self) -> Fault:
        return self._fault

    @fault.setter
    def fault(self, fault: Fault) -> None:
        """Tests turn a fault on or off while the agent runs (an agent that recovers)."""
        self._fault = fault

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def powered_off(self) -> bool:
        return self._down

    def power_on(self) -> None:
        """Boot again after a shutdown: a fresh agent (the frozen state is gone)."""
        self._restart()
        self._frozen = False  # a boot starts with nothing frozen (an agent restart keeps it)
        self._down = False
        self._resume_at = 0.0

    def connect(self) -> list[Output]:
        """A client connected."""
        if self._fault is Fault.ACCEPT_CLOSE:
            return [Close()]
        self._started_endless = False  # each client gets its own endless reply
        return []

    def receive(self, data: bytes) -> list[Output]:
        """Bytes from the client; returns what to do, in order."""
        if self._down or self._fault is Fault.SILENT:
            return []
        if self._fault is Fault.ENDLESS:
            if self._started_endless:
                return []
            if not self._stream.feed(data):
                return []
            self._started_endless = True
            return [Stream(endless())]
        out: list[Output] = []
        now = self._clock()
        if self._resume_at > now:
            out.append(Pause(self._resume_at - now))
        for request in self._stream.feed(data):
            self._handle(request, out)
            if self._down:
                break
        return out

    def handle(self, request: object) -> list[Output]:
        """Run one already-parsed request (for tests and tools)."""
        out: list[Output] = []
        self._handle(request, out)
        return out

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, request: object, out: list[Output]) -> None:
        era = self._era
        if isinstance(request, JsonError):
            if era.old_texts:  # before 3.0 a stray byte was just "Invalid JSON syntax"
                cls = "JSONParsing" if era.old_classes else "GenericError"
                self._emit(None, _error_text(cls, "Invalid JSON syntax", None), out)
            else:
                self._emit(None, _error_text("GenericError", request.desc, None), out)
            return
        command: str | None = None
        rid: object = None
        delimited = False
        try:
            if not isinstance(request, dict):
                raise CommandError("QMP input must be a JSON object")
            if era.ids == "echoed":
                rid = request.get("id")
            command = self._check_request(request)
            args = request.get("arguments", {})
            ret = self._run(command, args)
        except CommandError as exc:
            text = _error_text(exc.error_class, exc.desc, rid)
        else:
            if ret is None:  # success-response: false
                if self._power_off:
                    out.append(Pause(2.0))  # QEMU exits ~2 s after the guest powers off
                    out.append(PowerOff())
                    self._power_off = False
                return
            if command == "guest-sync-delimited":
                delimited = True
            text = _return_text(ret, rid, self._fault is Fault.WRONG_IDS)
        self._emit(command, text, out, delimited=delimited, rid=rid)

    def _check_request(self, request: dict[str, object]) -> str:
        command: str | None = None
        for key, value in request.items():
            if key == "execute":
                if not isinstance(value, str):
                    raise CommandError("QMP input member 'execute' must be a string")
                command = value
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise CommandError("QMP input member 'arguments' must be an object")
            elif key == "id" and self._era.ids == "refused":
                # qmp_dispatch_check_obj() before 2.12 took only execute and arguments
                raise CommandError(
                    "QMP input object member 'id' is unexpected",
                    "QMPExtraInputObjectMember" if self._era.old_classes else "GenericError",
                )
            elif key != "id":
                raise CommandError(f"QMP input member '{key}' is unexpected")
        if command is None:
            raise CommandError("QMP input lacks member 'execute'")
        return command

    def _run(self, command: str, args: dict[str, object]) -> str | None:
        handler = _HANDLERS.get(command)
        if handler is None or command not in self._supported():
            raise CommandError(f"The command {command} has not been found", "CommandNotFound")
        reason = self._disabled_reason(command)
        if reason is not None:
            if self._era.old_texts:
                raise CommandError(
                    f"The command {command} has been disabled for this instance",
                    "CommandDisabled" if self._era.old_classes else "GenericError",
                )
            raise CommandError(f"Command {command} has been disabled{reason}", "CommandNotFound")
        params = check_args(SCHEMAS.get(command, ()), args, self._era)
        value = handler(self, params)
        if value is NO_REPLY:
            return None
        if command == "guest-info":
            assert isinstance(value, str)
            return value  # already JSON text (cached)
        if self._fault is Fault.OUT_OF_RANGE:
            value = out_of_range(command, value)
        elif self._fault is Fault.WRONG_IDS and command in ("guest-sync", "guest-sync-delimited"):
            assert isinstance(value, int)
            value = value + 1
        return dumps(value)

    def _emit(
        self,
        command: str | None,
        text: str,
        out: list[Output],
        *,
        delimited: bool = False,
        rid: object = None,
    ) -> None:
        fault = self._fault
        if fault is Fault.SYNC_ONLY and not (command == "guest-sync-delimited" and delimited):
            return
        data = text.encode()
        if delimited:
            data = b"\xff" + data
        data += b"\n"
        if fault is Fault.NONE or fault is Fault.FROZEN or fault is Fault.MARKUP:
            out.append(data)
            return
        plain_sync = command is None or command in SYNC_COMMANDS  # None: a parse error
        rid_text = "" if rid is None else f', "id": {dumps(wrap_floats(rid))}'
        if fault is Fault.SLOW:
            out.append(Pause(SLOW_REPLY_DELAY))
        elif fault is Fault.LATE_REPLY:
            out.append(Pause(4.0))
        elif fault is Fault.GARBAGE:
            digest = hashlib.blake2s(data, digest_size=1).digest()[0]
            data = GARBAGE[digest % len(GARBAGE)]
        elif fault is Fault.DISCONNECT and not plain_sync:
            out.append(data[: max(1, len(data) // 2)])
            out.append(Close())
            return
        elif fault is Fault.OVERSIZE and not plain_sync:
            out.append(Stream(oversize_reply(rid_text)))
            return
        elif fault is Fault.HUGE_REPLY and not plain_sync:
            out.append(Stream(huge_reply(rid_text)))
            return
        elif fault is Fault.DEEP_NESTING and not plain_sync:
            data = deep_reply(rid_text)
        elif fault is Fault.REPEATED_IDS:
            data = data + data
        elif fault is Fault.FF_FLOOD:
            data = FF_FLOOD + data
        elif fault is Fault.INVALID_UTF8:
            data = data.replace(INVALID_MARK_JSON, INVALID_BYTES)
        out.append(data)


_Handler = Callable[[GuestAgent, dict[str, object]], object]
_HANDLERS: dict[str, _Handler] = {}
for _table in (
    info.HANDLERS,
    hardware.HANDLERS,
    stats.HANDLERS,
    admin.HANDLERS,
    freeze.HANDLERS,
    power.HANDLERS,
    files.HANDLERS,
    processes.HANDLERS,
):
    _HANDLERS.update(_table)


def _return_text(ret: str, rid: object, wrong_ids: bool) -> str:
    if rid is None:
        return '{"return": ' + ret + "}"
    if wrong_ids:
        rid = rid + 1 if is_int(rid) else f"not-{rid}"  # type: ignore[operator]
    return '{"return": ' + ret + ', "id": ' + dumps(wrap_floats(rid)) + "}"


def _error_text(error_class: str, desc: str, rid: object) -> str:
    error = '{"class": ' + dumps(error_class) + ', "desc": ' + dumps(desc) + "}"
    if rid is None:
        return '{"error": ' + error + "}"
    return '{"id": ' + dumps(wrap_floats(rid)) + ', "error": ' + error + "}"
