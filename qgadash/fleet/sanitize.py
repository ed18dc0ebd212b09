"""Guest strings made safe to print: no escape sequences, no control characters.

A guest can put anything in a hostname or a file name; printed raw, an ESC sequence
would repaint the operator's terminal. Control characters become visible `\\xNN` or
`\\uNNNN` escapes and long strings are cut, so what is shown is what was sent.
"""

from __future__ import annotations

import re
import unicodedata

# C0, DEL, C1, and the bidi/format characters that can reorder what is displayed.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str | None, max_len: int = 200, placeholder: str = "") -> str:
    """`text` with every unsafe character shown as an escape, cut to `max_len`."""
    if text is None:
        return placeholder
    if len(text) > max_len * 4:
        text = text[: max_len * 4]
    cleaned = _UNSAFE.sub(_escape, text)
    if any(unicodedata.category(ch) in ("Cs", "Co", "Cn") for ch in cleaned):
        cleaned = "".join(
            ch if unicodedata.category(ch) not in ("Cs", "Co", "Cn") else "\ufffd" for ch in cleaned
        )
    if len(cleaned) > max_len:
        cleaned = cleaned[: max_len - 1] + "…"
    return cleaned
