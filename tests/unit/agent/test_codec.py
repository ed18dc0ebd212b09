"""The sans-IO decoder: every split point, resync on 0xFF, caps enforced while streaming."""

from __future__ import annotations

import json

import pytest

from qgadash.agent import codec
from qgadash.agent.codec import (
    DecodeError,
    Decoder,
    Reply,
    decode_body,
    encode_request,
    encode_sync,
)

STREAM = (
    b'{"return": {"version": "7.2.22", "supported_commands": []}, "id": 1}\n'
    b'{"error": {"class": "CommandNotFound", '
    b'"desc": "Command guest-exec has been disabled"}, "id": 2}\n'
    b'{"return": "thawed", "id": 3}\n'
)


def replies_of(messages: list[Reply | DecodeError]) -> list[Reply]:
    assert all(isinstance(m, Reply) for m in messages), messages
    return [m for m in messages if isinstance(m, Reply)]


def test_three_replies_in_one_read() -> None:
    got = replies_of(Decoder().feed(STREAM))
    assert [r.id for r in got] == [1, 2, 3]
    assert got[0].value["version"] == "7.2.22"
    assert got[1].error_class == "CommandNotFound" and not got[1].ok
    assert got[2].value == "thawed"


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_split_point_gives_the_same_replies(split: int) -> None:
    decoder = Decoder()
    got = decoder.feed(STREAM[:split]) + decoder.feed(STREAM[split:])
    assert [r.id for r in replies_of(got)] == [1, 2, 3]


def test_byte_by_byte() -> None:
    decoder = Decoder()
    got = [m for i in range(len(STREAM)) for m in decoder.feed(STREAM[i : i + 1])]
    assert [r.id for r in replies_of(got)] == [1, 2, 3]


def test_ff_mid_reply_drops_the_partial_reply() -> None:
    decoder = Decoder()
    assert decoder.feed(b'{"return": {"half": ') == []
    got = decoder.feed(b'\xff{"return": 12345}\n')
    assert replies_of(got) == [Reply(None, 12345)]
    assert decoder.resyncs == 1


def test_stale_replies_before_the_sync_reply_are_delivered_then_ignored_by_id() -> None:
    # What an agent sends to a new client after an old client's abandoned request.
    stale = (
        b'{"return": {"old": true}, "id": 99}\n'
        b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\ufffd\'"}}\n'
    )
    got = replies_of(Decoder().feed(stale + b'\xff{"return": 7}\n'))
    assert got[-1] == Reply(None, 7)
    assert got[0].id == 99


def test_invalid_json_is_an_error_then_decoding_continues() -> None:
    got = Decoder().feed(b'not json at all\n{"return": 1, "id": 5}\n')
    assert isinstance(got[0], DecodeError)
    assert got[1] == Reply(5, 1)


def test_invalid_utf8_is_an_error_not_an_exception() -> None:
    got = Decoder().feed(b'{"return": "\xc3\x28"}\n{"return": 2, "id": 6}\n')
    assert isinstance(got[0], DecodeError)
    assert got[1] == Reply(6, 2)


def test_non_object_reply_is_an_error() -> None:
    got = Decoder().feed(b"[1, 2, 3]\n42\n")
    assert all(isinstance(m, DecodeError) for m in got) and len(got) == 2


def test_oversize_reply_is_refused_without_buffering_it_whole() -> None:
    decoder = Decoder(max_reply=1000)
    errors = []
    chunk = b'{"return": "' + b"x" * 300
    errors += decoder.feed(chunk)
    for _ in range(100):  # 30 kB of one endless reply
        errors += decoder.feed(b"y" * 300)
        assert decoder.buffered <= 1000
    assert len(errors) == 1 and isinstance(errors[0], DecodeError)
    # The rest of the oversize reply is skipped; the next one decodes.
    got = decoder.feed(b'yyy"}\n{"return": 3, "id": 8}\n')
    assert got == [Reply(8, 3)]


def test_oversize_reply_in_one_read() -> None:
    got = Decoder(max_reply=100).feed(b'{"return": "' + b"x" * 200 + b'"}\n{"return": 1}\n')
    assert isinstance(got[0], DecodeError) and got[1] == Reply(None, 1)


def test_ff_ends_discarding_of_an_oversize_reply() -> None:
    decoder = Decoder(max_reply=100)
    decoder.feed(b"z" * 500)
    assert decoder.feed(b'\xff{"return": 9}\n') == [Reply(None, 9)]


def test_deep_nesting_is_refused() -> None:
    deep = b'{"return": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    got = Decoder(max_reply=1 << 20).feed(deep + b'{"return": 1}\n')
    assert isinstance(got[0], DecodeError) and "nested" in got[0].reason
    assert got[1] == Reply(None, 1)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 500
    got = Decoder(max_depth=8).feed(json.dumps({"return": text}).encode() + b"\n")
    assert got == [Reply(None, text)]


def test_error_without_desc_still_reads_as_error() -> None:
    (reply,) = replies_of(Decoder().feed(b'{"error": {"class": 5}, "id": 1}\n'))
    assert not reply.ok and reply.error_class == "GenericError"


def test_encode_request_only_has_the_three_members() -> None:
    doc = json.loads(encode_request("guest-file-read", {"handle": 1}, 77))
    assert doc == {"execute": "guest-file-read", "arguments": {"handle": 1}, "id": 77}
    assert json.loads(encode_request("guest-ping")) == {"execute": "guest-ping"}


def test_sync_starts_with_ff() -> None:
    data = encode_sync(2**63 - 1)
    assert data[0] == 0xFF
    assert json.loads(data[1:])["arguments"]["id"] == 2**63 - 1


def test_lazy_decoder_keeps_the_return_text_undecoded() -> None:
    from qgadash.agent.codec import decode_body

    got = Decoder(lazy=True).feed(b'{"return": {"host-name": "a, \\"id\\": 3}"}, "id": 42}\n')
    assert got == [Reply(42, body=b'{"host-name": "a, \\"id\\": 3}"}')]
    assert isinstance(got[0], Reply)
    assert decode_body(got[0].body or b"") == {"host-name": 'a, "id": 3}'}


def test_lazy_decoder_parses_errors_eagerly() -> None:
    got = Decoder(lazy=True).feed(b'{"error": {"class": "X", "desc": "d"}, "id": 1}\n')
    assert got == [Reply(1, None, "X", "d")]


def test_lazy_decoder_keeps_id_less_replies_undecoded_too() -> None:
    """Agents before qemu-ga 2.12 get no ids, and their replies carry none: a poll of
    them must not pay for decoding what did not change either."""
    got = Decoder(lazy=True).feed(b'{"return": 5}\n{"return": {"a": [1, {"b": 2}]}}\n')
    assert got == [Reply(None, body=b"5"), Reply(None, body=b'{"a": [1, {"b": 2}]}')]


def test_lazy_decoder_decodes_replies_with_an_odd_id_whole() -> None:
    got = Decoder(lazy=True).feed(b'{"return": 5, "id": "not-ours"}\n{"return": {"id": 3}}\n')
    assert got == [Reply("not-ours", 5), Reply(None, body=b'{"id": 3}')]


def test_requests_without_an_id_have_only_execute_and_arguments() -> None:
    assert encode_request("guest-info") == b'{"execute":"guest-info"}'
    assert json.loads(encode_request("guest-exec", {"path": "/bin/true"})) == {
        "execute": "guest-exec",
        "arguments": {"path": "/bin/true"},
    }


def test_sync_forms() -> None:
    plain = encode_sync(7, delimited=False)
    assert plain[0] == 0xFF and json.loads(plain[1:]) == {
        "execute": "guest-sync",
        "arguments": {"id": 7},
    }
    probe = json.loads(encode_sync(7, probe_id=7)[1:])
    assert probe == {"execute": "guest-sync-delimited", "arguments": {"id": 7}, "id": 7}


def test_decode_body_refuses_deep_or_broken_json() -> None:
    from qgadash.agent.codec import decode_body

    with pytest.raises(ValueError, match="nested"):
        decode_body(b"[" * 1000 + b"]" * 1000)
    with pytest.raises(ValueError, match="invalid JSON"):
        decode_body(b'1, "sneaky": 2')


def test_nesting_past_the_cap_is_refused_counting_only_brackets_outside_strings() -> None:
    decoder = Decoder(max_depth=8)
    at_cap = b'{"id": 1, "return": ' + b"[" * 7 + b"]" * 7 + b"}\n"  # 8 levels
    past = b'{"id": 2, "return": ' + b"[" * 8 + b"]" * 8 + b"}\n"  # 9 levels
    wide = b'{"id": 3, "return": [' + b", ".join([b"[]"] * 10) + b"]}\n"  # 11 brackets, 3 deep
    quoted = b'{"id": 4, "return": "\\"[[[[[[[[[[\\\\"}\n'  # an escaped quote, then brackets
    got = decoder.feed(at_cap + past + wide + quoted)
    assert got[0] == Reply(1, [[[[[[[]]]]]]])
    assert isinstance(got[1], DecodeError) and got[1].reason == "reply nested deeper than 8 levels"
    assert got[2] == Reply(3, [[]] * 10)
    assert got[3] == Reply(4, '"[[[[[[[[[[\\')
    assert decode_body(b"[" * 8 + b"]" * 8, 8) == [[[[[[[[]]]]]]]]
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        decode_body(b"[" * 9 + b"]" * 9, 8)
    assert decode_body(b'["\\"[[[[[[[[[["]', 8) == ['"[[[[[[[[[[']


def test_error_text_about_the_agents_bytes_is_capped_at_120_characters() -> None:
    assert codec._short(ValueError("x" * 120)) == "x" * 120
    assert codec._short(ValueError("x" * 121)) == "x" * 117 + "..."
    assert codec._short(ValueError("bad byte")) == "bad byte"


def test_a_reply_of_exactly_max_reply_bytes_across_reads_is_kept_and_one_more_is_not() -> None:
    first = b'{"return": "' + b"a" * 60 + b'"}\n'  # ahead of it in the same read
    exact = b'{"return": "' + b"x" * 86 + b'"}'  # 100 bytes
    assert len(exact) == 100
    decoder = Decoder(max_reply=100)
    got = decoder.feed(first + exact[:50])
    got += decoder.feed(exact[50:])
    got += decoder.feed(b"\n")
    assert got == [Reply(None, "a" * 60), Reply(None, "x" * 86)]
    over = b'{"return": "' + b"x" * 87 + b'"}'  # 101 bytes
    decoder = Decoder(max_reply=100)
    got = decoder.feed(over[:50]) + decoder.feed(over[50:]) + decoder.feed(b"\n")
    assert len(got) == 1 and isinstance(got[0], DecodeError)
    assert got[0].reason == "reply larger than 100 bytes"


def test_the_exact_nesting_check_counts_every_level_and_only_real_ones() -> None:
    """Cases where the cheap bracket count is over the cap, so the exact check decides."""
    eight = b"[" * 8 + b"]" * 8
    at_cap = b'{"a": ' + b"[" * 7 + b"]" * 7 + b', "b": []}'  # 8 deep, 9 brackets
    assert decode_body(at_cap, 8) == {"a": [[[[[[[]]]]]]], "b": []}
    siblings = b"[" + b", ".join([b"{}"] * 12) + b"]"  # 2 deep, closing braces count down
    assert decode_body(siblings, 8) == [{}] * 12
    after_a_close = b"[[[[[]," + b"[" * 5 + b"]" * 5 + b"]]]]"  # 5, back to 4, then 9
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        decode_body(after_a_close, 8)
    escaped_backslash = b'["a\\\\", ' + b"[" * 8 + b"]" * 8 + b"]"  # the string ends at \\"
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        decode_body(escaped_backslash, 8)
    assert decode_body(eight, 8) == [[[[[[[[]]]]]]]]


def test_a_reply_that_is_no_object_or_has_neither_member_says_what_it_was() -> None:
    got = Decoder().feed(b'[1, 2]\n{"id": 4}\n')
    assert got == [
        DecodeError("reply is a JSON list, not an object"),
        DecodeError("reply has neither 'return' nor 'error'"),
    ]


def test_an_error_without_a_string_desc_gets_a_stated_description() -> None:
    got = Decoder().feed(b'{"error": {"class": "X"}, "id": 1}\n{"error": {"desc": 5}, "id": 2}\n')
    stated = "the agent reported an error without a description"
    assert got == [Reply(1, None, "X", stated), Reply(2, None, "GenericError", stated)]


def test_a_lazy_body_with_an_encoded_surrogate_decodes_as_the_eager_parse_does() -> None:
    line = b'{"return": "\xed\xa0\x80x", "id": 1}\n'  # UTF-8 bytes of a lone U+D800
    (eager,) = Decoder().feed(line)
    (lazy,) = Decoder(lazy=True).feed(line)
    assert eager == Reply(1, "\ud800x")
    assert isinstance(lazy, Reply) and lazy.body == b'"\xed\xa0\x80x"'
    assert decode_body(lazy.body) == "\ud800x"


def test_a_lazy_body_that_is_not_utf8_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^invalid JSON from agent: 'utf-8' codec can't decode"):
        decode_body(b'"\xc3\x28"')


def test_nesting_deeper_than_python_can_parse_is_refused_under_a_lax_limit() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError) as caught:
        decode_body(deep, 10**6)
    assert str(caught.value) == "reply nested deeper than 1000000 levels"
    got = Decoder(max_reply=1 << 20, max_depth=10**6).feed(b'{"return": ' + deep + b"}\n")
    assert got == [DecodeError("reply nested deeper than 1000000 levels")]


def test_invalid_json_errors_keep_the_parsers_description() -> None:
    with pytest.raises(ValueError) as caught:
        decode_body(b'1, "sneaky": 2')
    assert str(caught.value) == "invalid JSON from agent: Extra data: line 1 column 2 (char 1)"
    got = Decoder().feed(b'{"return": 1} x\n')
    assert got == [DecodeError("invalid JSON from agent: Extra data: line 1 column 15 (char 14)")]


def test_decode_body_counts_braces_toward_the_nesting_cap() -> None:
    nine = b'{"a": ' * 9 + b"1" + b"}" * 9
    with pytest.raises(ValueError, match="nested deeper than 8 levels"):
        decode_body(nine, 8)
    eight = b'{"a": ' * 8 + b"1" + b"}" * 8
    assert decode_body(eight, 8) == json.loads(eight)


def test_requests_with_arguments_are_compact_bytes() -> None:
    assert encode_request("guest-exec", {"path": "/bin/true"}, 5) == (
        b'{"execute":"guest-exec","arguments":{"path":"/bin/true"},"id":5}'
    )
    assert encode_sync(3) == b'\xff{"execute":"guest-sync-delimited","arguments":{"id":3}}'


def test_a_request_without_arguments_keeps_a_non_integer_id() -> None:
    assert encode_request("guest-ping", id="abc") == b'{"execute":"guest-ping","id":"abc"}'
    assert encode_request("guest-ping", id=7) == b'{"execute":"guest-ping","id":7}'
    assert encode_request("guest-ping") == b'{"execute":"guest-ping"}'


def test_max_reply_of_two_bytes_is_allowed_and_one_is_refused() -> None:
    got = Decoder(max_reply=2).feed(b"42\n123\n")
    assert got == [
        DecodeError("reply is a JSON int, not an object"),
        DecodeError("reply larger than 2 bytes"),
    ]
    with pytest.raises(ValueError) as caught:
        Decoder(max_reply=1)
    assert str(caught.value) == "max_reply must be at least 2 bytes"


def test_the_reply_cap_holds_when_the_newline_comes_in_the_read_that_ends_the_reply() -> None:
    exact = b'{"return": "' + b"x" * 86 + b'"}'  # 100 bytes
    over = b'{"return": "' + b"x" * 87 + b'"}'  # 101 bytes
    decoder = Decoder(max_reply=100)
    got = decoder.feed(exact[:50]) + decoder.feed(exact[50:] + b"\n" + over[:50])
    got += decoder.feed(over[50:] + b'\n{"return": 1}\n')
    assert got == [
        Reply(None, "x" * 86),
        DecodeError("reply larger than 100 bytes"),
        Reply(None, 1),
    ]


def test_the_reply_cap_holds_at_its_edge_within_one_read() -> None:
    exact = b'{"return": "' + b"x" * 86 + b'"}'  # 100 bytes
    over = b'{"return": "' + b"x" * 87 + b'"}'  # 101 bytes
    got = Decoder(max_reply=100).feed(exact + b"\n" + over + b"\n")
    assert got == [Reply(None, "x" * 86), DecodeError("reply larger than 100 bytes")]


def test_ff_in_the_same_read_as_a_partial_reply_drops_only_the_partial_reply() -> None:
    decoder = Decoder()
    assert decoder.feed(b'{"return": {"half": \xff{"return": 2}\n') == [Reply(None, 2)]
    assert decoder.resyncs == 1


def test_two_ff_markers_in_one_read_each_resync() -> None:
    decoder = Decoder()
    got = decoder.feed(b'\xff{"return": 1}\n\xff{"return": 2}\n')
    assert got == [Reply(None, 1), Reply(None, 2)]
    assert decoder.resyncs == 2


def test_a_long_id_less_lazy_reply_with_an_id_member_early_in_its_value_stays_lazy() -> None:
    body = b'{"a": 1, "id": 2, "pad": "' + b"p" * 60 + b'"}'
    line = b'{"return": ' + body + b"}"
    got = Decoder(lazy=True).feed(line + b"\n")
    assert got == [Reply(None, body=body)]
    assert decode_body(body) == json.loads(line)["return"]
