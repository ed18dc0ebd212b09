"""The audit log: every action, as one JSON line, under the user's state directory.

Safe to share by default: secrets become `***`, payloads their length, and what a
command line or environment carried (`exec -- mysql -pS3cr3t`, guest-exec `env`) is
reduced to the program and a count unless the operator asks to keep it (`--audit-argv`).
The file is 0600 in a 0700 directory: it names every guest and what was done to it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from qgadash.agent.policy import BULKY_KEYS, SECRET_KEYS

_COMMAND_LINE_KEYS = frozenset({"arg", "argv", "env"})


def default_audit_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qgadash" / "audit.jsonl"


def _hidden(key: str, value: list[Any]) -> Any:
    if key == "argv" and value:
        rest = len(value) - 1
        return [value[0], *([f"<{rest} arguments hidden>"] if rest else [])]
    return f"<{len(value)} {'variables' if key == 'env' else 'arguments'} hidden>"


def mask_arguments(args: Any, keep_argv: bool = False) -> Any:
    """Secrets become `***`, payloads their length, command lines a count."""
    if isinstance(args, dict):
        out: dict[str, Any] = {}
        for key, value in args.items():
            if key in SECRET_KEYS and key not in _COMMAND_LINE_KEYS:
                out[key] = "***"
            elif key in BULKY_KEYS and isinstance(value, str):
                out[key] = f"<{len(value)} base64 chars>"
            elif key in _COMMAND_LINE_KEYS and isinstance(value, list) and not keep_argv:
                out[key] = _hidden(key, value)
            else:
                out[key] = mask_arguments(value, keep_argv)
        return out
    if isinstance(args, list):
        return [mask_arguments(v, keep_argv) for v in args]
    return args


class AuditLog:
    """Appends one line per action outcome; a failing disk never breaks the action."""

    def __init__(self, path: Path | None = None, *, keep_argv: bool = False) -> None:
        self.path = path or default_audit_path()
        self.keep_argv = keep_argv
        self.user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())
        self.failed: str | None = None

    def record(
        self,
        action: str,
        vm_id: str,
        arguments: Any,
        ok: bool | None,
        error: str | None,
        elapsed_ms: float,
    ) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": self.user,
            "vm": vm_id,
            "action": action,
            "arguments": mask_arguments(arguments, self.keep_argv),
            "ok": ok,
            "error": error,
            "elapsed_ms": round(elapsed_ms, 1),
        }
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self._append(line)
        except OSError as exc:
            self.failed = f"cannot write the audit log {self.path}: {exc.strerror or exc}"

    def _append(self, line: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(directory.stat().st_mode) & 0o077:
            directory.chmod(0o700)
        fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, 0o600)
            os.write(fd, line)
        finally:
            os.close(fd)
