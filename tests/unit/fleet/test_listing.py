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
    MAX_NAME_BYTES,
    DirEntry,
    ParsedListing,
    linux_list_command,
    parse_listing,
    parse_record,
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


# -- each record's limits, exactly at their edges ----------------------------------------


def test_a_record_is_read_whole_its_name_keeping_spaces_and_its_numbers_exact() -> None:
    entry = parse_record(b"41ed 4096 1700000000.5 my  dir ")
    assert entry == DirEntry("my  dir ", "dir", 4096, 1700000000.5)
    assert parse_record(b"81a4 0 -12 f") == DirEntry("f", "file", 0, -12.0)
    assert parse_record(b"a1ff 7 1 l") == DirEntry("l", "link", 7, 1.0)
    assert parse_record(b"11a4 0 1 p") == DirEntry("p", "other", 0, 1.0)  # a FIFO
    assert parse_record(b"81a4\t1 1 f") is None  # fields are split on one space only


@pytest.mark.parametrize(
    ("mode", "size", "mtime", "ok"),
    [
        ("8" * 8, "1", "1", True),
        ("8" * 9, "1", "1", False),
        ("", "1", "1", False),
        ("81a4", "9" * 18, "1", True),
        ("81a4", "0" * 20, "1", True),
        ("81a4", "0" * 21, "1", False),
        ("81a4", "", "1", False),
        ("81a4", "1", "0" * 20, True),
        ("81a4", "1", "0" * 21, False),
        ("81a4", "1", "", False),
        ("81a4", str(2**63 - 1), "1", True),
        ("81a4", str(2**63), "1", False),
        ("81a4", "-1", "1", False),
        ("81a4", "1", str(2**40), True),
        ("81a4", "1", str(-(2**40)), True),
        ("81a4", "1", str(2**40 + 1), False),
        ("81a4", "1", "nan", False),
        ("81a4", "1", "inf", False),
        ("zz", "1", "1", False),
        ("81a4", "1.5", "1", False),
    ],
)
def test_each_number_is_refused_just_past_its_limit(
    mode: str, size: str, mtime: str, ok: bool
) -> None:
    entry = parse_record(f"{mode} {size} {mtime} name".encode())
    assert (entry is not None) is ok


def test_names_are_refused_past_their_length_and_never_a_path_or_dot() -> None:
    assert parse_record(b"81a4 1 1 " + b"n" * MAX_NAME_BYTES) is not None
    assert parse_record(b"81a4 1 1 " + b"n" * (MAX_NAME_BYTES + 1)) is None
    for bad in (b"", b"a/b", b".", b".."):
        assert parse_record(b"81a4 1 1 " + bad) is None, bad
    assert parse_record(b"81a4 1 1 ...") == DirEntry("...", "file", 1, 1.0)
    # Undecodable bytes are shown replaced, not refused (and not decoded as Latin-1).
    assert parse_record(b"81a4 1 1 caf\xe9") == DirEntry("caf\ufffd", "file", 1, 1.0)
    assert parse_record("81a4 1 1 café".encode()) == DirEntry("café", "file", 1, 1.0)


def test_the_counts_of_skipped_and_more_are_exact() -> None:
    out = record(b"a") + b"garbage\0" + record(b"a") + b"also bad\0" + record(b"b")
    assert parse_listing(out) == ParsedListing(
        (DirEntry("a", "file", 10, 1700000000.0), DirEntry("b", "file", 10, 1700000000.0)), 3, 0
    )
    # An unterminated last record was cut short: one more, not an entry.
    assert parse_listing(record(b"a") + b"81a4 1 1 cut").more == 1
    assert parse_listing(record(b"a") + record(b"b")[:-1]) == ParsedListing(
        (DirEntry("a", "file", 10, 1700000000.0),), 0, 1
    )
    past = MAX_LIST_ENTRIES + 7
    many = parse_listing(b"".join(record(b"f%d" % i) for i in range(past)))
    assert (len(many.entries), many.skipped, many.more) == (MAX_LIST_ENTRIES, 0, 7)


def test_the_byte_cap_counts_each_record_it_cuts_off() -> None:
    one = record(b"n" * 1000)
    per = len(one)
    fit = MAX_LIST_BYTES // per
    names = [b"%07d" % i + b"n" * 993 for i in range(fit + 5)]
    out = b"".join(record(n) for n in names)
    parsed = parse_listing(out)
    assert len(parsed.entries) == fit and parsed.skipped == 0
    assert parsed.more == 5  # the five records past the cap, the cut one included
    unterminated = parse_listing(out[:-1])
    assert unterminated.more == 5  # the last one lost its terminator: still five
    # Output of exactly the cap is not cut.
    exact = b"".join(record(n) for n in names[:fit])
    padded = exact + record(b"x" * (MAX_LIST_BYTES - len(exact) - len(record(b""))))
    assert len(padded) == MAX_LIST_BYTES
    assert parse_listing(padded).more == 0


def test_the_windows_script_decodes_to_the_path_exactly_and_runs_without_a_profile() -> None:
    path = "C:\\Données\\ünï"
    program, argv = windows_list_command(path)
    assert program == "powershell.exe"
    assert argv[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    script = base64.b64decode(argv[3]).decode("utf-16-le")
    encoded_path = re.search(r"FromBase64String\('([A-Za-z0-9+/=]+)'\)", script)
    assert encoded_path is not None
    assert base64.b64decode(encoded_path.group(1)).decode("utf-8") == path
