"""The audit log: every action, as one JSON line, under the user's state directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

_SECRET_KEYS = frozenset({"password", "crypted", "passwd", "secret"})
_BULKY_KEYS = frozenset({"buf-b64", "input-data"})


def default_audit_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qgadash" / "audit.jsonl"


def mask_arguments(args: Any) -> Any:
    """Secrets become `***`, payloads become their length: the log must be safe to share."""
    if isinstance(args, dict):
        out: dict[str, Any] = {}
        for key, value in args.items():
            if key in _SECRET_KEYS:
                out[key] = "***"
            elif key in _BULKY_KEYS and isinstance(value, str):
                out[key] = f"<{len(value)} base64 chars>"
            else:
                out[key] = mask_arguments(value)
        return out
    if isinstance(args, list):
        return [mask_arguments(v) for v in args]
    return args


class AuditLog:
    """Appends one line per action outcome; a failing disk never breaks the action."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_audit_path()
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
            "arguments": mask_arguments(arguments),
            "ok": ok,
            "error": error,
            "elapsed_ms": round(elapsed_ms, 1),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.failed = f"cannot write the audit log {self.path}: {exc.strerror or exc}"
