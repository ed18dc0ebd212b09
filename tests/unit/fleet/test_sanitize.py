"""One rule for guest text: the CLI and the dashboard refuse the same characters."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qgadash.fleet.sanitize import printable, unsafe_char
from qgadash.ui.plain import sanitize

# The ones the CLI let through while the dashboard replaced them (issue 13), and the
# classics: ESC, C1 CSI, bidi override, zero-width joiner, line separator.
NAMED = [
    "\u061c",  # ARABIC LETTER MARK
    "\u00ad",  # SOFT HYPHEN
    "\u180e",  # MONGOLIAN VOWEL SEPARATOR
    *[chr(c) for c in range(0x206A, 0x2070)],
    "\U000e0001",  # LANGUAGE TAG
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
    "\x1b",
    "\x9b",
    "\u202e",
    "\u200d",
    "\u2028",
]


@pytest.mark.parametrize("ch", NAMED, ids=lambda c: f"U+{ord(c):04X}")
def test_the_cli_and_the_dashboard_both_replace(ch: str) -> None:
    text = f"ok{ch}ok"
    assert ch not in printable(text)
    assert ch not in sanitize(text)
    assert f"\\u{ord(ch):04x}" in printable(text) or f"\\x{ord(ch):02x}" in printable(text)


@given(st.text())
def test_nothing_unsafe_survives_either_rendering(text: str) -> None:
    for shown in (printable(text, 10_000), sanitize(text, 10_000)):
        assert not any(unsafe_char(ch) for ch in shown)


@given(st.characters())
def test_one_rule_decides_for_both(ch: str) -> None:
    replaced_by_cli = printable(ch, 50) != ch
    replaced_by_ui = sanitize(ch, 50) != ch
    assert replaced_by_cli == replaced_by_ui == unsafe_char(ch), unicodedata.category(ch)
