"""Logging for one qgadash process, set up at the entry point.

Everything below uses `logging.getLogger(__name__)`; this decides where it goes. With
`--log-file` records go to that file (0600: it names guests and what was done to them),
warnings and up by default, everything with `--debug`. Without it nothing is written
anywhere: stderr belongs to the dashboard's screen and to the CLI's own messages, and
Python's last-resort handler would paint warnings over both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def configure_logging(log_file: str | None, debug: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is None:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)
        return
    path = Path(log_file).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8", buffering=1))
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # Libraries' debug chatter (asyncio, asyncssh's packets) only when asked twice over.
    for noisy in ("asyncio", "asyncssh"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
