"""Guest-reported strings made safe to draw.

Everything a guest says (hostnames, OS names, user names, file names, error text) is
untrusted. It must never be read as markup, and control characters must never reach the
terminal: an ESC could move the cursor or recolour the screen, a bidi override could make
`evil` read as `live`. Which characters are unsafe is decided in one place for the CLI
and the dashboard (`qgadash.fleet.sanitize.unsafe_char`). `plain()` builds a
`rich.text.Text` (never parsed as markup) with each such character replaced by a visible
placeholder, and truncates long strings.
"""

from __future__ import annotations

from functools import lru_cache

from rich.style import Style
from rich.text import Text

from qgadash.fleet.sanitize import unsafe_char

__all__ = ["ELLIPSIS", "plain", "sanitize"]

ELLIPSIS = "…"

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
        out = "".join(_placeholder(ch) if unsafe_char(ch) else ch for ch in s)
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
