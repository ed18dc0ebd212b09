"""A tiny blocking QMP client: connect, negotiate capabilities, run one command, close.

One connection per command keeps it stateless and thread-safe (QEMU's QMP socket
serves one client at a time) at the cost of ~1 ms per call, irrelevant for tests.
Events arriving meanwhile are skipped.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


class QMPError(RuntimeError):
    """QEMU answered a command with ``{"error": ...}``."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error_class = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"QMP {command}: {self.error_class}: {self.desc}")


class _Lines:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = b""

    def next(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("QMP reply timed out")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise ConnectionError(f"unexpected QMP message: {line!r}")
        return msg

    def reply(self, command: str) -> Any:
        while True:
            msg = self.next()
            if "event" in msg:
                continue
            if "error" in msg:
                raise QMPError(command, msg["error"])
            if "return" in msg:
                return msg["return"]


def qmp_command(
    path: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 5.0
) -> Any:
    """Run ``command`` and return its ``return`` member (a dict for most commands)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        lines = _Lines(sock, deadline)
        greeting = lines.next()
        if "QMP" not in greeting:
            raise ConnectionError(f"not a QMP greeting: {greeting}")
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        lines.reply("qmp_capabilities")
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        sock.sendall(json.dumps(request).encode() + b"\n")
        return lines.reply(command)
