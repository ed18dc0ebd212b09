"""Property tests: arbitrary bytes and values never escape as anything but documented errors.

CI runs a bounded number of examples. A long campaign:
    HYPOTHESIS_PROFILE=long python -m pytest tests/unit/agent/test_fuzz.py
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import types
import typing
from collections.abc import Callable
from functools import partial
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

# The edges of what parsers must check: ranges, non-finite numbers, booleans for integers.
EDGES = [-1, 2**31, 2**63, 2**64, 2**80, 1e16, -0.5, float("inf"), float("-inf"), "", "\x00"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from(EDGES)
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

# Every parser with a realistic reply it accepts. Mutations start from these and go to
# their own parser, so they reach its member checks instead of being refused at the top.
REPLIES: list[tuple[str, Callable[[Any], Any], Any]] = [
    (
        "info",
        replies.parse_info,
        {
            "version": "7.2",
            "supported_commands": [
                {"name": "guest-ping", "enabled": True, "success-response": True}
            ],
        },
    ),
    (
        "osinfo",
        replies.parse_osinfo,
        {"id": "debian", "name": "Debian", "pretty-name": "D", "kernel-release": "6.1"},
    ),
    ("host-name", replies.parse_host_name, {"host-name": "web-1"}),
    ("users", replies.parse_users, [{"user": "root", "login-time": 1.5}]),
    ("timezone", replies.parse_timezone, {"zone": "UTC", "offset": 0}),
    ("time", replies.parse_time, 1_700_000_000_000_000_000),
    ("fsfreeze-status", replies.parse_fsfreeze_status, "thawed"),
    ("fsfreeze-thaw", partial(replies.parse_count, command="guest-fsfreeze-thaw"), 2),
    ("fstrim", replies.parse_fstrim, {"paths": [{"path": "/", "trimmed": 5, "minimum": 0}]}),
    (
        "fsinfo",
        replies.parse_fsinfo,
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
    ),
    (
        "disks",
        replies.parse_disks,
        [{"name": "/dev/vda1", "partition": True, "dependencies": ["/dev/vda"], "alias": "a"}],
    ),
    (
        "diskstats",
        replies.parse_diskstats,
        [{"name": "vda", "major": 252, "minor": 0, "stats": {"read-ios": 1}}],
    ),
    ("interfaces", replies.parse_interfaces, INTERFACES),
    (
        "interfaces-after-a-poll",
        partial(replies.parse_interfaces, previous=replies.parse_interfaces(INTERFACES)),
        INTERFACES,
    ),
    ("vcpus", replies.parse_vcpus, [{"logical-id": 0, "online": True, "can-offline": False}]),
    ("cpustats", replies.parse_cpustats, [{"cpu": 0, "type": "linux", "user": 1}]),
    ("load", replies.parse_load, {"load1m": 0.1, "load5m": 0.2, "load15m": 0.3}),
    ("file-open", replies.parse_file_handle, 1000),
    (
        "file-read",
        partial(replies.parse_file_read, max_count=1 << 20),
        {"count": 3, "buf-b64": "YWJj", "eof": True},
    ),
    ("file-write", replies.parse_file_write, {"count": 3, "eof": False}),
    ("file-seek", replies.parse_file_seek, {"position": 3, "eof": False}),
    ("exec", replies.parse_exec, {"pid": 1234}),
    ("exec-status", replies.parse_exec_status, {"exited": True, "exitcode": 0, "out-data": "YWJj"}),
]
PARSERS = [parse for _, parse, _ in REPLIES]


def assert_typed(value: Any, hint: Any, where: str = "result") -> None:
    """`value` is what `hint` declares, all the way down: no JSON list or object passes
    through unparsed, no boolean stands for a number, every integer is in the int64 range,
    every float is finite."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                assert_typed(value, option, where)
                return
            except AssertionError:
                continue
        raise AssertionError(f"{where}: {value!r:.80} is not {hint}")
    if (origin is tuple and args[1:] == (Ellipsis,)) or origin is frozenset:
        assert type(value) is origin, f"{where}: {type(value).__name__}, not {hint}"
        for i, item in enumerate(value):
            assert_typed(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        assert type(value) is dict, f"{where}: {type(value).__name__}, not {hint}"
        for key, item in value.items():
            assert_typed(key, args[0], f"{where} key")
            assert_typed(item, args[1], f"{where}[{key!r}]")
    elif hint is type(None):
        assert value is None, f"{where}: {value!r:.80}, not None"
    elif hint in (bool, int, float, str, bytes):
        assert type(value) is hint, f"{where}: {type(value).__name__} {value!r:.80}, not {hint}"
        if hint is int:
            assert -(2**63) <= value <= replies.INT64_MAX, f"{where}: {value} out of range"
        if hint is float:
            assert math.isfinite(value), f"{where}: {value}"
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        assert type(value) is hint, f"{where}: {value!r:.80}, not {hint}"
    elif isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, tuple)):
        assert type(value) is hint, f"{where}: {type(value).__name__}, not {hint.__name__}"
        for name, field_hint in typing.get_type_hints(hint).items():
            assert_typed(getattr(value, name), field_hint, f"{where}.{name}")
    else:
        raise AssertionError(f"{where}: the test does not know the type {hint}")


def returns(parse: Any) -> Any:
    return typing.get_type_hints(getattr(parse, "func", parse))["return"]


@pytest.mark.parametrize(("name", "parse", "reply"), REPLIES, ids=[n for n, _, _ in REPLIES])
def test_every_parser_accepts_its_realistic_reply(name: str, parse: Any, reply: Any) -> None:
    assert_typed(parse(reply), returns(parse))


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


def _parse_or_refuse(parse: Callable[[Any], Any], value: Any) -> None:
    try:
        result = parse(value)
    except AgentProtocolError:
        return
    assert_typed(result, returns(parse))


def _leaf_replacements(value: Any) -> list[Any]:
    """`value` once for every (leaf, edge value) pair: each leaf replaced by each edge."""
    if isinstance(value, dict):
        return [{**value, k: new} for k in value for new in _leaf_replacements(value[k])]
    if isinstance(value, list):
        return [
            [*value[:i], new, *value[i + 1 :]]
            for i in range(len(value))
            for new in _leaf_replacements(value[i])
        ]
    return [*EDGES, True, None]


@pytest.mark.parametrize(("name", "parse", "reply"), REPLIES, ids=[n for n, _, _ in REPLIES])
def test_every_member_at_every_edge_parses_or_is_refused(name: str, parse: Any, reply: Any) -> None:
    for value in _leaf_replacements(reply):
        _parse_or_refuse(parse, value)


@given(json_values)
@settings(max_examples=300)
def test_every_parser_returns_a_parsed_value_or_raises_a_protocol_error(value: Any) -> None:
    for parse in PARSERS:
        _parse_or_refuse(parse, value)


@given(st.data())
@settings(max_examples=600)
def test_a_realistic_reply_with_any_member_replaced_parses_or_is_refused(
    data: st.DataObject,
) -> None:
    _, parse, reply = data.draw(st.sampled_from(REPLIES), label="parser")
    _parse_or_refuse(parse, data.draw(_mutations(reply), label="reply"))


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
