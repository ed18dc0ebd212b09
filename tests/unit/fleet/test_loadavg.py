"""/proc/loadavg as `status` reads it for agents without guest-get-load: three numbers
or nothing (a guest's file is untrusted text)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qgadash.agent.replies import Load
from qgadash.fleet.loadavg import parse_loadavg


def test_the_three_averages_of_linux_s_file() -> None:
    assert parse_loadavg(b"0.52 0.58 1.59 2/345 12345\n") == Load(0.52, 0.58, 1.59)


@pytest.mark.parametrize(
    "data",
    [b"", b"0.1 0.2", b"nan 0.1 0.2 1/2 3", b"-1 0 0 1/2 3", b"inf 1 1", b"\xff\xfe 1 2", b"a b c"],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_loadavg(data)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_load_or_value_error(data: bytes) -> None:
    try:
        load = parse_loadavg(data)
    except ValueError:
        return
    assert min(load.load1, load.load5, load.load15) >= 0
