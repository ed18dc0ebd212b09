"""Host keys: which known_hosts files and lines name a host, and a refusal in plain words.

Host keys are always verified against known_hosts (the target's file, else
~/.ssh/config's UserKnownHostsFile, else ~/.ssh/known_hosts); an unknown or changed key
is refused with a message naming the host, the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import asyncssh


def known_hosts_files(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, os.PathLike))]
    return []


def _display_path(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + "/") else path


def matching_known_hosts_lines(
    files: Sequence[str], host: str, addr: str | None, port: int | None
) -> list[tuple[str, int]]:
    """(file, line number) of every known_hosts line that names this host (hashed or not)."""
    found: list[tuple[str, int]] = []
    for name in files:
        path = os.path.expanduser(name)
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                entries = asyncssh.import_known_hosts(text)
                matched = asyncssh.match_known_hosts(entries, host, addr or "", port)
            except (ValueError, asyncssh.KeyImportError):
                continue
            if any(matched[:3]):
                found.append((path, number))
    return found


def host_key_message(
    name: str,
    host: str,
    port: int | None,
    files: Sequence[str],
    offered: tuple[str, str, int, asyncssh.SSHKey] | None,
    reason: str,
) -> str:
    """Plain words for a refused host key: which host, which file and line, what to do."""
    shown_host = host if port in (None, 22) else f"[{host}]:{port}"
    fingerprint = ""
    addr: str | None = None
    if offered is not None:
        host, addr, key_port, key = offered
        port = key_port
        fingerprint = f" (it offered {key.get_algorithm()} {key.get_fingerprint('sha256')})"
    match_port = None if port in (None, 22) else port
    lines = matching_known_hosts_lines(files, host, addr, match_port)
    if "revoked" in reason:
        return f"{name}: ssh host key for {shown_host} is revoked in known_hosts{fingerprint}"
    if lines:
        where = ", ".join(f"{_display_path(f)} line {n}" for f, n in lines)
        return (
            f"{name}: ssh host key for {shown_host} does not match {where}{fingerprint}; "
            "if the key changed on purpose, replace that line after checking the new key"
        )
    shown_files = ", ".join(
        _display_path(os.path.expanduser(f))
        + ("" if os.path.isfile(os.path.expanduser(f)) else " (no such file)")
        for f in files
    )
    return (
        f"{name}: ssh host key for {shown_host} is unknown: not in {shown_files}{fingerprint}; "
        "check the fingerprint with the hypervisor's admin, then add the key to that file"
    )
