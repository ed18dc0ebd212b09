"""Directory listings of untrusted guests: the scripts that make them, the parser that
reads them.

The agent has no directory listing, so a script runs through guest-exec. Two rules
keep the guest's data data:
- The path is never a command-line word of a Windows program: everything after
  powershell's `-Command` is joined into the script text, so a directory named
  `x;New-Item C:\\pwned` would be code. The script goes in `-EncodedCommand` (UTF-16LE,
  base64) and the path inside it as base64, decoded by the script itself. On Linux the
  path is `$1` of `sh -c` (an argument, never parsed as code).
- Each entry ends with a NUL, so a name with a newline cannot forge entries.

The parser trusts nothing: entries and bytes are capped (the script caps them too, but
the guest may not run our script), each bad record is skipped and counted, duplicate
names are dropped, sizes and times must be sane. It is plain CPU work and is run off
the event loop by its caller.
"""

from __future__ import annotations

import base64
import math
import stat
from dataclasses import dataclass

MAX_LIST_ENTRIES = 5000
MAX_LIST_BYTES = 4 * 1024 * 1024  # of script output; 5,000 long names fit easily
MAX_NAME_BYTES = 4096
MAX_SIZE = 2**63 - 1
MAX_MTIME = 2**40  # seconds: year 36,812; anything later is nonsense
TRUNCATED_EXIT = 3  # the script's exit status when it stopped at the entry cap

# $1 is the directory. One record per entry: "MODEHEX SIZE MTIME NAME\0".
LINUX_LIST_SCRIPT = (
    'cd -- "$1" || exit 1; n=0; for f in .* *; do case "$f" in .|..) continue;; esac; '
    '[ -e "$f" ] || [ -L "$f" ] || continue; n=$((n+1)); '
    f'[ $n -gt {MAX_LIST_ENTRIES} ] && {{ echo "... more" >&2; exit {TRUNCATED_EXIT}; }}; '
    'm=$(stat -c \'%f %s %Y\' -- "$f") || continue; printf \'%s %s\\000\' "$m" "$f"; done'
)

# PATH_B64 is replaced by the path's UTF-8 bytes in base64 (only [A-Za-z0-9+/=]).
WINDOWS_LIST_SCRIPT = (
    "$ErrorActionPreference = 'Stop'; "
    "[Console]::OutputEncoding = [Text.Encoding]::UTF8; "
    "$p = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('PATH_B64')); "
    "$n = 0; "
    "foreach ($i in Get-ChildItem -Force -LiteralPath $p) { "
    f"$n++; if ($n -gt {MAX_LIST_ENTRIES}) {{ [Console]::Error.Write('... more'); "
    f"exit {TRUNCATED_EXIT} }}; "
    "$m = if ($i.PSIsContainer) { '41ed' } else { '81a4' }; "
    "$s = if ($i.PSIsContainer) { 0 } else { $i.Length }; "
    "$t = ([DateTimeOffset]$i.LastWriteTimeUtc).ToUnixTimeSeconds(); "
    "[Console]::Out.Write(('{0} {1} {2} {3}' -f $m, $s, $t, $i.Name) + [char]0) }"
)


def linux_list_command(path: str) -> tuple[str, list[str]]:
    return "/bin/sh", ["-c", LINUX_LIST_SCRIPT, "qgadash-ls", path]


def windows_list_command(path: str) -> tuple[str, list[str]]:
    encoded_path = base64.b64encode(path.encode("utf-8")).decode("ascii")
    script = WINDOWS_LIST_SCRIPT.replace("PATH_B64", encoded_path)
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return "powershell.exe", ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    kind: str  # "dir" | "file" | "link" | "other"
    size: int | None
    mtime: float | None


@dataclass(frozen=True, slots=True)
class ParsedListing:
    entries: tuple[DirEntry, ...]
    skipped: int = 0  # records that did not parse (or repeated a name)
    more: int = 0  # records past the caps, not shown


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def parse_record(record: bytes) -> DirEntry | None:
    """One `MODEHEX SIZE MTIME NAME` record, or None if any part is not sane."""
    parts = record.split(b" ", 3)
    if len(parts) != 4:
        return None
    mode_hex, size, mtime, raw_name = parts
    if not (0 < len(mode_hex) <= 8 and 0 < len(size) <= 20 and 0 < len(mtime) <= 20):
        return None
    if not raw_name or len(raw_name) > MAX_NAME_BYTES or b"/" in raw_name:
        return None
    try:
        mode = int(mode_hex, 16)
        size_n = int(size)
        mtime_n = float(mtime)
    except ValueError:
        return None
    if not (0 <= size_n <= MAX_SIZE) or not math.isfinite(mtime_n) or abs(mtime_n) > MAX_MTIME:
        return None
    name = raw_name.decode("utf-8", errors="replace")
    if name in (".", ".."):
        return None
    return DirEntry(name, _kind(mode), size_n, mtime_n)


def parse_listing(output: bytes) -> ParsedListing:
    """NUL-terminated records, at most MAX_LIST_ENTRIES of them from the first
    MAX_LIST_BYTES; directories first, then by name."""
    more = 0
    if len(output) > MAX_LIST_BYTES:
        cut = output.rfind(b"\0", 0, MAX_LIST_BYTES) + 1
        more += output.count(b"\0", cut) + (0 if output.endswith(b"\0") else 1)
        output = output[:cut]
    records = output.split(b"\0")
    if records and records[-1] == b"":
        records.pop()
    elif records:
        records.pop()  # an unterminated last record was cut short: not an entry
        more += 1
    entries: dict[str, DirEntry] = {}
    skipped = 0
    for record in records:
        if len(entries) >= MAX_LIST_ENTRIES:
            more += 1
            continue
        entry = parse_record(record)
        if entry is None or entry.name in entries:
            skipped += 1
            continue
        entries[entry.name] = entry
    ordered = sorted(entries.values(), key=lambda e: (e.kind != "dir", e.name))
    return ParsedListing(tuple(ordered), skipped, more)
