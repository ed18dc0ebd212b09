"""Shell text run on hypervisors: every guest- or config-chosen value quoted or passed
as a positional argument, never spliced into a script.

Shared by the SSH transport (discovery, diagnosis, socat channels) and the
hypervisor-side thaw keeper.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

__all__ = [
    "diagnose_command",
    "discovery_script",
    "parse_discovery_output",
    "sh_command",
    "shell_glob",
    "socat_unix_address",
]


_BRACKET = re.compile(r"\[[!^]?\]?[A-Za-z0-9._,:+@%=-]*\]")


def shell_glob(pattern: str) -> str:
    """`pattern` as shell text where only `*`, `?` and `[...]` stay special.

    Everything else is quoted, so a pattern can name odd directories without running
    anything; a leading `~/` becomes the remote user's home.
    """
    parts: list[str] = []
    literal = ""
    rest = pattern
    if rest == "~" or rest.startswith("~/"):
        parts.append('"$HOME"')
        rest = rest[1:]
    i = 0
    while i < len(rest):
        ch = rest[i]
        bracket = _BRACKET.match(rest, i) if ch == "[" else None
        if ch in "*?" or bracket:
            if literal:
                parts.append(shlex.quote(literal))
                literal = ""
            token = bracket.group(0) if bracket else ch
            parts.append(token)
            i += len(token)
            continue
        literal += ch
        i += 1
    if literal:
        parts.append(shlex.quote(literal))
    return "".join(parts) or "''"


def sh_command(script: str) -> str:
    """Run `script` with /bin/sh whatever the remote user's login shell is."""
    return "exec /bin/sh -c " + shlex.quote(script)


def discovery_script(patterns: Sequence[str]) -> str:
    """Print every socket matching the globs, NUL-terminated; an empty record after each glob."""
    loops = [
        f'for p in {shell_glob(pattern)}; do [ -S "$p" ] && printf \'%s\\000\' "$p"; done; '
        "printf '\\000'"
        for pattern in patterns
    ]
    return "; ".join([*loops, "exit 0"])


def parse_discovery_output(output: bytes) -> list[str]:
    """Paths from `discovery_script`'s output: each glob's sorted, duplicates dropped."""
    paths: list[str] = []
    seen: set[str] = set()
    group: list[str] = []
    for record in output.split(b"\0"):
        if record:
            group.append(record.decode("utf-8", "surrogateescape"))
            continue
        for path in sorted(group):
            if path not in seen:
                seen.add(path)
                paths.append(path)
        group = []
    return paths


_SOCAT_SPECIAL = frozenset("\\:,!\"'()[]{} ;\t")


def socat_unix_address(path: str) -> str:
    """socat's `UNIX-CONNECT:PATH` with socat's own separators escaped."""
    escaped = "".join("\\" + ch if ch in _SOCAT_SPECIAL else ch for ch in path)
    return "UNIX-CONNECT:" + escaped


_DIAGNOSE = r"""p=$1; d=$(dirname -- "$p")
if [ -S "$p" ]; then
  if [ ! -r "$p" ] || [ ! -w "$p" ]; then echo noperm
  elif P=$p awk 'BEGIN { p = " " ENVIRON["P"] }
        $4 == "00010000" && substr($0, length($0) - length(p) + 1) == p { f = 1 }
        END { exit !f }' /proc/net/unix 2>/dev/null; then echo listening
  else echo usable; fi
elif [ -e "$p" ]; then echo notsocket
elif [ -d "$d" ] && [ ! -x "$d" ]; then echo dirperm
elif [ -d "$d" ]; then echo missing
else echo nodir
fi
id -un"""


def diagnose_command(path: str) -> str:
    return "exec /bin/sh -c " + shlex.quote(_DIAGNOSE) + " qgadash " + shlex.quote(path)
