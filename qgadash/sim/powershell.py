"""powershell.exe in a simulated Windows guest: its command line, and the few scripts
the simulator understands (qgadash's directory listing, and what an injection would run).

How Windows PowerShell 5.1 reads its command line (Microsoft, about_PowerShell_exe):

- `-Command` takes everything after it: the remaining arguments are joined with spaces
  into the script text. `$args` stays empty, so a "data" argument after the script is
  code: a directory named `x;New-Item C:\\pwned` runs New-Item.
- `-Command -`, or no command at all with standard input redirected, reads the script
  from standard input (guest-exec's `input-data`).
- `-EncodedCommand` takes the script as base64 of its UTF-16LE text.
- Parameters are case-insensitive, start with `-` or `/`, and may be abbreviated; the
  first argument that is not a parameter starts an implicit `-Command`.

The scripts are not interpreted in general: statements are split at top level, and
those the simulator knows are run against the guest (`Guest`); any other command is
"not recognized", as PowerShell would say of a program that is not there.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Guest", "Invocation", "parse_command_line", "run"]

_VALUED = (
    "command",
    "encodedcommand",
    "file",
    "executionpolicy",
    "inputformat",
    "outputformat",
    "windowstyle",
    "version",
    "configurationname",
    "psconsolefile",
)
_FLAGS = ("noprofile", "noninteractive", "nologo", "noexit", "sta", "mta", "help")
_ALIASES = {"c": "command", "e": "encodedcommand", "ec": "encodedcommand", "ep": "executionpolicy"}


@dataclass(frozen=True, slots=True)
class Invocation:
    """What powershell.exe makes of its arguments."""

    script: str | None = None  # the script text, or None: nothing to run
    stdin: bytes = b""  # standard input left for the script (unless it was the script)
    error: str | None = None  # powershell.exe refused the command line


@dataclass(slots=True)
class Guest:
    """The guest as a script sees it."""

    # (mode, size, mtime, name) per entry of a directory; None when it is not one,
    # False when nothing is there.
    listing: Callable[[str], list[tuple[int, int, int, str]] | bool | None]
    create: Callable[[str], None]  # New-Item: an empty file
    created: list[str] = field(default_factory=list)


def _parameter(word: str) -> str | None:
    """The full name of the parameter `word` names, or None if it is not one."""
    if len(word) < 2 or word[0] not in "-/":
        return None
    name = word[1:].lower()
    if name in _ALIASES:
        return _ALIASES[name]
    matches = [p for p in _VALUED + _FLAGS if p.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    return "?" + name


def parse_command_line(argv: list[str], stdin: bytes) -> Invocation:
    i = 0
    while i < len(argv):
        word = argv[i]
        name = _parameter(word)
        if name is None:  # an implicit -Command: this and everything after it
            return Invocation(" ".join(argv[i:]), stdin)
        if name.startswith("?"):
            return Invocation(error=f"-{name[1:]} : unknown parameter")
        if name == "command":
            rest = argv[i + 1 :]
            if rest == ["-"]:
                return Invocation(stdin.decode("utf-8", "replace"), b"")
            return Invocation(" ".join(rest), stdin)
        if name in _VALUED:
            if i + 1 >= len(argv):
                return Invocation(error=f"Missing argument for parameter {word}.")
            value = argv[i + 1]
            if name == "encodedcommand":
                try:
                    script = base64.b64decode(value, validate=True).decode("utf-16-le")
                except (binascii.Error, ValueError):
                    return Invocation(
                        error="Cannot process the command because the value specified with "
                        "-EncodedCommand is not properly encoded. The value must be "
                        "Base64 encoded."
                    )
                # Later parameters are still read (-NoProfile after it works); no $args.
                tail = parse_command_line(argv[i + 2 :], stdin)
                if tail.error is not None:
                    return tail
                return Invocation(script, stdin)
            if name == "file":
                return Invocation(error="-File is not simulated")
            i += 2
            continue
        i += 1
    if stdin:  # no command: a redirected stdin is read as commands
        return Invocation(stdin.decode("utf-8", "replace"), b"")
    return Invocation(None, stdin)


# -- scripts ---------------------------------------------------------------------------


def split_statements(script: str) -> list[str]:
    """Top-level statements: split at `;` and newlines outside braces, brackets,
    parentheses and quotes (`'it''s'`, "a`"b")."""
    out: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    n = len(script)
    while i < n:
        ch = script[i]
        if quote:
            if ch == "`" and quote == '"':
                i += 2
                continue
            if ch == quote:
                if i + 1 < n and script[i + 1] == quote:
                    i += 2
                    continue
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "{([":
            depth += 1
        elif ch in "})]":
            depth = max(0, depth - 1)
        elif ch in ";\n" and depth == 0:
            out.append(script[start:i].strip())
            start = i + 1
        i += 1
    out.append(script[start:].strip())
    return [s for s in out if s]


_ASSIGN = re.compile(r"^\$(\w+)\s*=\s*(.+)$", re.S)
_B64 = re.compile(r"FromBase64String\(\s*'([A-Za-z0-9+/=]*)'\s*\)")
_QUOTED = re.compile(r"^'((?:[^']|'')*)'$")
_CAP = re.compile(r"\$n\s+-gt\s+(\d+)")
_LITERAL_PATH = re.compile(r"-(?:Literal)?Path\s+('(?:[^']|'')*'|\$\w+(?:\[\d+\])?)", re.I)
_EXIT = re.compile(r"^exit\s*(\d*)$", re.I)


def _value(expr: str, variables: dict[str, str | None], stdin: bytes) -> str | None:
    expr = expr.strip()
    found = _B64.search(expr)
    if found is not None and "UTF8.GetString" in expr:
        try:
            return base64.b64decode(found.group(1)).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
    if "[Console]::In.ReadToEnd()" in expr or expr in ("$input", "@($input)"):
        return stdin.decode("utf-8", "replace").rstrip("\r\n")
    if "[Console]::In.ReadLine()" in expr:
        return stdin.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    quoted = _QUOTED.match(expr)
    if quoted is not None:
        return quoted.group(1).replace("''", "'")
    if expr.startswith("$args"):
        return None  # -Command and -EncodedCommand leave $args empty
    if expr.startswith("$"):
        return variables.get(expr[1:])
    return None


def run(invocation: Invocation, guest: Guest) -> tuple[int, bytes, bytes]:
    """Run what powershell.exe was given: (exit code, stdout, stderr)."""
    if invocation.error is not None:
        return 64, b"", (invocation.error + "\r\n").encode()
    if invocation.script is None:
        return 0, b"", b""
    variables: dict[str, str | None] = {}
    out = bytearray()
    err = bytearray()
    stop = False
    ok = True
    for statement in split_statements(invocation.script):
        exited = _EXIT.match(statement)
        if exited is not None:
            return int(exited.group(1) or 0), bytes(out), bytes(err)
        assigned = _ASSIGN.match(statement)
        if assigned is not None and "Get-ChildItem" not in statement:
            name, expr = assigned.groups()
            if name == "ErrorActionPreference":
                stop = expr.strip().strip("'\"").lower() == "stop"
            else:
                variables[name] = _value(expr, variables, invocation.stdin)
            ok = True
            continue
        if statement.startswith("[Console]::OutputEncoding"):
            continue
        if "Get-ChildItem" in statement:
            code = _list(statement, variables, invocation.stdin, guest, out, err)
            if code:
                if stop or code == 3:
                    return code, bytes(out), bytes(err)
                ok = False
            else:
                ok = True
            continue
        command = statement.split(None, 1)[0] if statement.split() else ""
        if command.lower() == "new-item":
            target = _first_argument(statement)
            if target:
                guest.create(target)
                guest.created.append(target)
                ok = True
                continue
        if command.lower() in ("write-output", "echo"):
            words = statement.split(None, 1)
            text = words[1] if len(words) > 1 else ""
            out += (_value(text, variables, invocation.stdin) or text).encode() + b"\r\n"
            ok = True
            continue
        err += (
            f"{command} : The term '{command}' is not recognized as the name of a cmdlet, "
            "function, script file, or operable program.\r\n"
        ).encode("utf-8", "replace")
        ok = False
        if stop:
            return 1, bytes(out), bytes(err)
    return (0 if ok else 1), bytes(out), bytes(err)


def _first_argument(statement: str) -> str | None:
    words = statement.split()[1:]
    for i, word in enumerate(words):
        if word.lower() in ("-path", "-literalpath") and i + 1 < len(words):
            return _unquote(words[i + 1])
        if not word.startswith("-"):
            return _unquote(word)
    return None


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def _list(
    statement: str,
    variables: dict[str, str | None],
    stdin: bytes,
    guest: Guest,
    out: bytearray,
    err: bytearray,
) -> int:
    """The listing statement: `Get-ChildItem -Force -LiteralPath X` and a record per entry,
    `MODEHEX SIZE MTIME NAME`, each ended by [char]0 if the script writes one, else CRLF."""
    found = _LITERAL_PATH.search(statement)
    path = _value(found.group(1), variables, stdin) if found is not None else None
    if path is None:
        err += (
            b"Get-ChildItem : Cannot bind argument to parameter 'LiteralPath' because it "
            b"is null.\r\n"
        )
        return 1
    entries = guest.listing(path)
    if entries is False:
        err += (f"Get-ChildItem : Cannot find path '{path}' because it does not exist.\r\n").encode(
            "utf-8", "replace"
        )
        return 1
    if entries is None or entries is True:
        entries = []
    cap_match = _CAP.search(statement)
    cap = int(cap_match.group(1)) if cap_match is not None else None
    end = b"\0" if "[char]0" in statement else b"\r\n"
    for n, (mode, size, mtime, name) in enumerate(entries, 1):
        if cap is not None and n > cap:
            err += b"... more"
            return 3
        is_dir = mode & 0o170000 == 0o040000
        record = f"{'41ed' if is_dir else '81a4'} {0 if is_dir else size} {mtime} {name}"
        out += record.encode("utf-8", "replace") + end
    return 0
