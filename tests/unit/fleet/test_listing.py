"""Directory listings from an untrusted guest: the scripts keep data data, the parser
keeps its caps and skips (and counts) what does not parse."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from qgadash.fleet.listing import (
    MAX_LIST_BYTES,
    MAX_LIST_ENTRIES,
    linux_list_command,
    parse_listing,
    windows_list_command,
)

HOSTILE_PATH = "C:\\Users\\x;New-Item C:\\pwned; $(whoami) `n' \"'"


def record(name: bytes, mode: str = "81a4", size: str = "10", mtime: str = "1700000000") -> bytes:
    return f"{mode} {size} {mtime} ".encode() + name + b"\0"


def test_windows_listing_carries_the_path_only_as_base64_inside_the_encoded_script() -> None:
    program, args = windows_list_command(HOSTILE_PATH)
    assert program == "powershell.exe"
    assert "-Command" not in args and args[-2] == "-EncodedCommand"
    # No word of the command line holds any part of the path: nothing for powershell's
    # command-line joining to turn into code.
    assert all("pwned" not in a and "whoami" not in a for a in args)
    script = base64.b64decode(args[-1]).decode("utf-16-le")
    assert "pwned" not in script and "whoami" not in script
    (encoded,) = re.findall(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)", script)
    assert base64.b64decode(encoded).decode() == HOSTILE_PATH


def test_linux_listing_passes_the_path_as_an_argument_and_survives_hostile_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "two\nlines 81a4 1 1 fake").write_bytes(b"x")
    (tmp_path / "$(touch pwned)").write_bytes(b"")
    (tmp_path / "sub dir").mkdir()
    (tmp_path / ".hidden").write_bytes(b"abc")
    program, args = linux_list_command(str(tmp_path))
    out = subprocess.run([program, *args], capture_output=True, check=True, timeout=10).stdout
    parsed = parse_listing(out)
    names = [e.name for e in parsed.entries]
    assert names == ["sub dir", "$(touch pwned)", ".hidden", "two\nlines 81a4 1 1 fake"]
    assert [e.kind for e in parsed.entries] == ["dir", "file", "file", "file"]
    assert parsed.skipped == 0 and parsed.more == 0
    assert not (tmp_path / "pwned").exists()


def test_a_newline_in_a_name_cannot_forge_an_entry() -> None:
    parsed = parse_listing(record(b"evil\n41ed 0 0 forged"))
    assert [e.name for e in parsed.entries] == ["evil\n41ed 0 0 forged"]


@pytest.mark.parametrize(
    "bad",
    [
        record(b"nan", mtime="nan"),
        record(b"inf", mtime="1e300"),
        record(b"huge", size="9" * 4000),
        record(b"negative", size="-1"),
        record(b"notanumber", mode="zz"),
        record(b"", size="1"),
        record(b"a/b"),
        record(b".."),
        b"too few fields\0",
    ],
)
def test_one_bad_record_is_skipped_and_counted_the_rest_are_kept(bad: bytes) -> None:
    parsed = parse_listing(record(b"before") + bad + record(b"after"))
    assert [e.name for e in parsed.entries] == ["after", "before"]
    assert parsed.skipped == 1


def test_a_repeated_name_is_shown_once() -> None:
    parsed = parse_listing(record(b"same") + record(b"same", size="99"))
    assert [(e.name, e.size) for e in parsed.entries] == [("same", 10)]
    assert parsed.skipped == 1


def test_entries_past_the_cap_are_counted_not_kept() -> None:
    out = b"".join(record(f"f{i:07d}".encode()) for i in range(MAX_LIST_ENTRIES + 1234))
    parsed = parse_listing(out)
    assert len(parsed.entries) == MAX_LIST_ENTRIES
    assert parsed.more == 1234


def test_output_past_the_byte_cap_is_cut_at_a_record_boundary() -> None:
    long = b"n" * 1000
    out = b"".join(record(long + str(i).encode()) for i in range(MAX_LIST_BYTES // 1000 + 100))
    parsed = parse_listing(out)
    assert all(e.name.startswith("n" * 1000) for e in parsed.entries)
    assert parsed.more > 0 and parsed.skipped == 0


def test_650000_entries_keep_only_what_the_caps_allow() -> None:
    """The listing that stalled the loop for 45 s at 1.3 GB: the parser keeps 5,000."""
    out = b"".join(record(f"file-{i:07d}".encode()) for i in range(650_000))
    parsed = parse_listing(out)
    assert len(parsed.entries) == MAX_LIST_ENTRIES
    assert parsed.more == 650_000 - MAX_LIST_ENTRIES  # counted, for "N more not shown"
