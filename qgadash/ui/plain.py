"""Guest-reported strings made safe to draw.

Everything a guest says (hostnames, OS names, user names, file names, error text) is
untrusted. It must never be read as markup, and control characters must never reach the
terminal: an ESC could move the cursor or recolour the screen, a bidi override could make
`evil` read as `live`. `plain()` builds a `rich.text.Text` (never parsed as markup) with
each such character replaced by a visible placeholder, and truncates long strings.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from rich.style import Style
from rich.text import Text

__all__ = ["ELLIPSIS", "plain", "sanitize"]

ELLIPSIS = "…"

# Characters that pass the category test below but still change how text is laid out.
_ALSO_UNSAFE = frozenset("\u2028\u2029")

# Visible stand-ins: the Unicode "control pictures" for C0 and DEL.
_C0_PICTURES = {i: chr(0x2400 + i) for i in range(0x20)}
_DEL_PICTURE = "\u2421"  # ␡


@lru_cache(maxsize=4096)
def _placeholder(ch: str) -> str:
    code = ord(ch)
    if code < 0x20:
        return _C0_PICTURES[code]
    if code == 0x7F:
        return _DEL_PICTURE
    return "\ufffd"  # C1, bidi controls, format characters, separators, surrogates


@lru_cache(maxsize=65536)
def _unsafe(ch: str) -> bool:
    if ch in _ALSO_UNSAFE:
        return True
    category = unicodedata.category(ch)
    # Cc: C0, DEL, C1.  Cf: bidi overrides/isolates, zero-width and other invisible
    # format characters.  Cs: lone surrogates (from undecodable bytes).  Co: private use.
    return category in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def sanitize(s: str, max_len: int = 200) -> str:
    """`s` with every control/format character replaced and cut to `max_len` characters."""
    if max_len < 1:
        max_len = 1
    cut = len(s) > max_len
    if cut:
        s = s[: max_len - 1]
    if s.isprintable() and s.isascii():
        out = s
    else:
        out = "".join(_placeholder(ch) if _unsafe(ch) else ch for ch in s)
    return out + ELLIPSIS if cut else out


def plain(
    s: str | None,
    max_len: int = 200,
    *,
    style: str | Style = "",
    missing: str = "—",
) -> Text:
    """A `Text` showing `s` literally: no markup, no escapes, at most `max_len` characters.

    `None` (the guest did not say) becomes `missing`.
    """
    if s is None:
        return Text(missing, style=style, no_wrap=True, overflow="ellipsis", end="")
    return Text(sanitize(s, max_len), style=style, no_wrap=True, overflow="ellipsis", end="")
