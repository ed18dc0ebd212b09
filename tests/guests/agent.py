"""A deliberately tiny, blocking guest-agent client for fixtures and fixture tests.

This is not the product's client: it exists so the fixture can tell when a guest's
agent answers (readiness), and so the fixture's own tests can check the image
without depending on code under test. It follows protocol.md's sync recipe:
0xFF + ``guest-sync-delimited`` with a fresh id, drop everything up to the agent's
0xFF, then ignore replies until the one carrying our id.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

MAX_BUFFER = 64 * 1024 * 1024
"""Cap on buffered, not yet parsed reply bytes (protocol.md: bound every read)."""


class AgentError(RuntimeError):
    """The agent answered with ``{"error": ...}``."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error_class = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"{command}: {self.error_class}: {self.desc}")


class AgentTimeout(TimeoutError):
    """No (matching) reply before the deadline."""


def _request(command: str, arguments: dict[str, Any] | None, ident: int | None) -> bytes:
    msg: dict[str, Any] = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    if ident is not None:
        msg["id"] = ident
    return json.dumps(msg).encode() + b"\n"


def _fresh_id() -> int:
    return secrets.randbits(62)


class RawAgent:
    """One connection to a guest agent socket; use as a context manager.

    The socket serves one client at a time (protocol.md), so keep these short-lived.
    """

    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buf = bytearray()
        try:
            self._sock.connect(str(self.path))
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> RawAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _fill(self, deadline: float, alive: Callable[[], bool] | None) -> None:
        """Read once, waiting at most until ``deadline``; raise on EOF or timeout."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout(f"no reply from agent at {self.path}")
            # Short slices so a dead VM is noticed without waiting the whole timeout.
            self._sock.settimeout(min(remaining, 0.25))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                if alive is not None and not alive():
                    raise ConnectionError("the VM exited") from None
                continue
            if not chunk:
                raise ConnectionError(f"agent socket {self.path} closed")
            self._buf += chunk
            if len(self._buf) > MAX_BUFFER:
                raise ConnectionError("agent reply exceeds the buffer cap")
            return

    def _next_message(self, deadline: float, alive: Callable[[], bool] | None) -> dict[str, Any]:
        """The next JSON object; a 0xFF (the agent's sync mark) drops what preceded it."""
        while True:
            ff = self._buf.rfind(b"\xff")
            if ff != -1:
                del self._buf[: ff + 1]
            nl = self._buf.find(b"\n")
            if nl != -1:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # half a document from an earlier client
                if isinstance(msg, dict):
                    return msg
                continue
            self._fill(deadline, alive)

    def sync(self, timeout: float | None = None, alive: Callable[[], bool] | None = None) -> int:
        """Resynchronise the stream; returns the id the agent echoed."""
        ident = _fresh_id()
        self._sock.sendall(b"\xff" + _request("guest-sync-delimited", {"id": ident}, None))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self._next_message(deadline, alive)
            if msg.get("return") == ident:
                return ident

    def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        """Send a request without waiting (e.g. guest-shutdown); returns its id."""
        ident = _fresh_id()
        self._sock.sendall(_request(command, arguments, ident))
        return ident

    def wait_reply(self, command: str, ident: int, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self._next_message(deadline, None)
            if msg.get("id") != ident:
                continue
            if "error" in msg:
                raise AgentError(command, msg["error"])
            return msg.get("return")

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one command and return its ``return`` value (raises AgentError)."""
        return self.wait_reply(command, self.send(command, arguments), timeout)


def open_agent(path: Path | str, timeout: float = 5.0) -> RawAgent:
    """Connect and sync: the channel may hold stale bytes from an earlier client."""
    agent = RawAgent(path, timeout)
    try:
        agent.sync()
    except BaseException:
        agent.close()
        raise
    return agent


def wait_for_agent(
    path: Path, deadline: float, alive: Callable[[], bool], resend_after: float = 15.0
) -> None:
    """Block until the agent behind ``path`` answers a sync, or raise by ``deadline``.

    One request is sent per connection and left queued: QEMU keeps it in the socket
    until the guest opens its port, so the agent answers as soon as it starts. Only
    if nothing comes back for ``resend_after`` seconds is the connection renewed.
    """
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise ConnectionError("the VM exited before its agent answered")
        try:
            agent = RawAgent(path)
        except OSError as exc:  # socket not created yet
            last_error = exc
            time.sleep(0.02)
            continue
        with agent:
            try:
                agent.sync(min(resend_after, max(0.0, deadline - time.monotonic())), alive)
                return
            except (AgentTimeout, OSError) as exc:
                if isinstance(exc, ConnectionError) and not alive():
                    raise
                last_error = exc
    raise AgentTimeout(f"agent at {path} did not answer in time (last error: {last_error})")
