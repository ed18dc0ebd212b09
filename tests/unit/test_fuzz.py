"""Property tests: arbitrary bytes and values never escape as anything but documented errors.

CI runs a bounded number of examples. A long campaign:
    HYPOTHESIS_PROFILE=long python -m pytest tests/unit/test_fuzz.py
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qgadash.agent import replies
from qgadash.agent.codec import DecodeError, Decoder, Reply
from qgadash.agent.errors import AgentProtocolError

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=200_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CAP = 4096

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_decoder_never_raises_and_never_buffers_past_the_cap(chunks: list[bytes]) -> None:
    decoder = Decoder(max_reply=CAP)
    for chunk in chunks:
        for message in decoder.feed(chunk):
            assert isinstance(message, Reply | DecodeError)
        assert decoder.buffered <= CAP


@given(
    st.lists(st.binary(max_size=200), max_size=10), st.integers(min_value=1, max_value=2**63 - 1)
)
def test_a_sync_after_garbage_restores_the_stream(garbage: list[bytes], sync_id: int) -> None:
    decoder = Decoder(max_reply=CAP)
    for chunk in garbage:
        decoder.feed(chunk)
    got = decoder.feed(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
    assert got and got[-1] == Reply(None, sync_id)


@given(st.lists(json_values, min_size=1, max_size=5), st.data())
def test_replies_split_anywhere_decode_the_same(values: list[Any], data: st.DataObject) -> None:
    stream = b"".join(
        json.dumps({"return": v, "id": i}).encode() + b"\n" for i, v in enumerate(values)
    )
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
    decoder = Decoder(max_reply=1 << 20)
    got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    assert [m.id for m in got if isinstance(m, Reply)] == list(range(len(values)))


PARSERS = [
    replies.parse_info,
    replies.parse_osinfo,
    replies.parse_host_name,
    replies.parse_users,
    replies.parse_timezone,
    replies.parse_time,
    replies.parse_fsfreeze_status,
    lambda v: replies.parse_count(v, "guest-fsfreeze-thaw"),
    replies.parse_fstrim,
    replies.parse_fsinfo,
    replies.parse_disks,
    replies.parse_diskstats,
    replies.parse_interfaces,
    lambda v: replies.parse_interfaces(v, replies.parse_interfaces(INTERFACES)),
    replies.parse_vcpus,
    replies.parse_cpustats,
    replies.parse_load,
    replies.parse_file_handle,
    lambda v: replies.parse_file_read(v, 1 << 20),
    replies.parse_file_write,
    replies.parse_file_seek,
    replies.parse_exec,
    replies.parse_exec_status,
]

INTERFACES: list[Any] = [
    {
        "name": "eth0",
        "hardware-address": "52:54:00:00:00:01",
        "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "10.0.0.1", "prefix": 24},
            {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64},
        ],
        "statistics": {"rx-bytes": 1, "tx-bytes": 2},
    },
    {
        "name": "eth1",
        "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.1.1", "prefix": 16}],
        "statistics": dict.fromkeys(replies._STAT_KEYS, 7),
    },
]

# Realistic shapes with every field then replaced by an arbitrary value.
SHAPES: list[Any] = [
    {
        "version": "7.2",
        "supported_commands": [{"name": "guest-ping", "enabled": True, "success-response": True}],
    },
    {"id": "debian", "name": "Debian", "pretty-name": "D", "kernel-release": "6.1"},
    {"host-name": "web-1"},
    [{"user": "root", "login-time": 1.5}],
    {"zone": "UTC", "offset": 0},
    [
        {
            "name": "vda1",
            "mountpoint": "/",
            "type": "ext4",
            "used-bytes": 1,
            "total-bytes": 2,
            "disk": [{"dev": "/dev/vda"}],
        }
    ],
    INTERFACES,
    {"load1m": 0.1, "load5m": 0.2, "load15m": 0.3},
    {"count": 3, "buf-b64": "YWJj", "eof": True},
    {"exited": True, "exitcode": 0, "out-data": "YWJj"},
    {"paths": [{"path": "/", "trimmed": 5, "minimum": 0}]},
    [{"cpu": 0, "type": "linux", "user": 1}],
    [{"name": "vda", "major": 252, "minor": 0, "stats": {"read-ios": 1}}],
]


def _mutations(value: Any) -> st.SearchStrategy[Any]:
    """`value` with one member, anywhere inside it, replaced by an arbitrary JSON value."""
    if isinstance(value, dict) and value:
        return st.sampled_from(sorted(value)).flatmap(
            lambda k: st.one_of(json_values, _mutations(value[k])).map(
                lambda new: {**value, k: new}
            )
        )
    if isinstance(value, list) and value:
        return st.integers(0, len(value) - 1).flatmap(
            lambda i: _mutations(value[i]).map(lambda new: [*value[:i], new, *value[i + 1 :]])
        )
    return st.one_of(json_values, st.just(value))


@given(st.one_of(json_values, st.sampled_from(SHAPES).flatmap(_mutations)))
@settings(max_examples=300)
def test_every_parser_returns_or_raises_a_protocol_error(value: Any) -> None:
    for parse in PARSERS:
        try:
            parse(value)
        except AgentProtocolError:
            pass


def _with_address(prefix: Any, extra: dict[str, Any] | None = None) -> list[Any]:
    """INTERFACES with its first address's prefix (and maybe more members) replaced."""
    first = {**INTERFACES[0]["ip-addresses"][0], "prefix": prefix, **(extra or {})}
    eth0 = {**INTERFACES[0], "ip-addresses": [first, *INTERFACES[0]["ip-addresses"][1:]]}
    return [eth0, *INTERFACES[1:]]


@given(_mutations(INTERFACES))
@example(_with_address(24.0))  # equal to the last poll's 24, but not an integer
@example(_with_address(24, {"scope": "global"}))  # a member more: the careful path
@example(_with_address(25))
@example(INTERFACES[::-1])
@settings(max_examples=400)
def test_interfaces_parse_the_same_with_or_without_the_last_poll(value: Any) -> None:
    """Reusing the last poll's addresses never accepts what a fresh parse would refuse."""
    previous = replies.parse_interfaces(INTERFACES)
    try:
        expected = replies.parse_interfaces(value)
    except AgentProtocolError:
        with pytest.raises(AgentProtocolError):
            replies.parse_interfaces(value, previous)
        return
    got = replies.parse_interfaces(value, previous)
    assert got == expected
    assert [[type(x) for x in a] for i in got for a in i.addresses] == [
        [type(x) for x in a] for i in expected for a in i.addresses
    ]
