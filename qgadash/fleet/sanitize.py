"""Guest strings made safe to show: one rule for what is unsafe, for the CLI and the
dashboard alike.

A guest can put anything in a hostname or a file name; printed raw, an ESC sequence
would repaint the operator's terminal and a bidi override could make `evil` read as
`live`. A character is unsafe when it is a control (C0, DEL, C1), a format character
(bidi controls, zero-width and other invisible ones, soft hyphen, tag characters), a
line or paragraph separator, a lone surrogate, private use, or unassigned. The CLI shows
each as a visible `\\xNN`/`\\uNNNN` escape (`printable`); the dashboard as a placeholder
glyph (`qgadash.ui.plain`); both decide with `unsafe_char`.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@lru_cache(maxsize=65536)
def unsafe_char(ch: str) -> bool:
    """Whether `ch` must not reach a terminal as itself."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str | None, max_len: int = 200, placeholder: str = "") -> str:
    """`text` with every unsafe character shown as an escape, cut to `max_len`."""
    if text is None:
        return placeholder
    if len(text) > max_len * 4:
        text = text[: max_len * 4]
    if text.isascii() and text.isprintable():
        cleaned = text
    else:
        cleaned = "".join(_escape(ch) if unsafe_char(ch) else ch for ch in text)
    if len(cleaned) > max_len:
        cleaned = cleaned[: max_len - 1] + "…"
    return cleaned


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line for people (errors in a row or a log): runs of whitespace, line
    breaks included, become one space; cut to `limit` with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
