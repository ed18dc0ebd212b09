"""The sans-IO session: bytes and requests in, bytes and events out, no sockets.

Each test is a transcript: what the session writes, what the agent answers (as qemu-ga
of the era in question words it), what the session makes of it.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from qgadash.agent.errors import AgentCommandError, AgentConnectionError, AgentProtocolError
from qgadash.agent.session import (
    IDS_REFUSED_NOTE,
    NEED_DATA,
    NO_ERROR_REPLY,
    PLAIN_SYNC_NOTE,
    AgentTraits,
    Done,
    Failed,
    IdMode,
    Runstate,
    Session,
    new_sync_id,
)

SYNC = 1000
POLL = [("guest-info", None), ("guest-fsfreeze-status", None), ("guest-get-host-name", None)]
STRAY_FF = b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\ufffd\'"}}\n'
OLD_STRAY = b'{"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}\n'
REFUSED = (
    b'{"error": {"class": "GenericError", '
    b'"desc": "QMP input object member \'id\' is unexpected"}}\n'
)
REFUSED_10 = (
    b'{"error": {"class": "QMPExtraInputObjectMember", '
    b'"desc": "QMP input object member \'id\' is unexpected"}}\n'
)
NO_DELIMITED = (
    b'{"error": {"class": "CommandNotFound", '
    b'"desc": "The command guest-sync-delimited has not been found"}}\n'
)
INFO = b'{"version": "2.5.0", "supported_commands": []}'


def session(traits: AgentTraits | None = None, first_sync: int = SYNC) -> Session:
    return Session(traits, sync_ids=itertools.count(first_sync))


def requests_in(data: bytes) -> list[dict[str, Any]]:
    """The JSON requests in what the session wrote (0xFF bytes dropped)."""
    decoder = json.JSONDecoder()
    text = data.replace(b"\xff", b"").decode()
    out, pos = [], 0
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        out.append(doc)
    return out


def answers(*ids: int | None) -> bytes:
    """7.2-style replies to POLL, with the given ids (None: an agent that echoes none)."""
    bodies = [INFO, b'"thawed"', b'{"host-name": "web-1"}']
    out = b""
    for body, rid in zip(bodies, ids, strict=False):
        out += b'{"return": ' + body + (b', "id": %d' % rid if rid is not None else b"") + b"}\n"
    return out


def run(s: Session, data: bytes) -> Any:
    s.receive_data(data)
    return s.next_event()


def expect_poll_results(event: Any) -> None:
    assert isinstance(event, Done), event
    assert event.results == [INFO, b'"thawed"', b'{"host-name": "web-1"}']


# -- the first exchange -----------------------------------------------------------------


def test_a_fresh_channels_poll_rides_behind_a_sync_that_probes_for_ids() -> None:
    s = session()
    s.start(POLL, read_only=True)
    out = s.data_to_send()
    assert out.startswith(b"\xff")
    sync, *polled = requests_in(out)
    assert sync == {"execute": "guest-sync-delimited", "arguments": {"id": SYNC}, "id": SYNC}
    assert polled == [{"execute": name} for name, _ in POLL]  # no ids before they are known
    assert s.next_event() is NEED_DATA
    event = run(s, STRAY_FF + b'\xff{"return": 1000, "id": 1000}\n' + answers(None, None, None))
    expect_poll_results(event)
    assert s.traits.ids is IdMode.ECHOED and s.state is Runstate.READY
    # Known to echo: from now on each request carries an id, and replies are checked by it.
    s.start(POLL[1:2], read_only=True)
    (request,) = requests_in(s.data_to_send())
    assert isinstance(request["id"], int)
    assert run(s, b'{"return": "frozen", "id": %d}\n' % request["id"]).results == [b'"frozen"']


STREAM = STRAY_FF + b'\xff{"return": 1000, "id": 1000}\n' + answers(None, None, None)


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_split_point_gives_the_same_results(split: int) -> None:
    s = session()
    s.start(POLL, read_only=True)
    s.data_to_send()
    assert run(s, STREAM[:split]) is NEED_DATA or split >= len(STREAM) - 1
    event = run(s, STREAM[split:])
    expect_poll_results(event)


def test_byte_by_byte() -> None:
    s = session()
    s.start(POLL, read_only=True)
    s.data_to_send()
    events = [run(s, STREAM[i : i + 1]) for i in range(len(STREAM))]
    assert all(e is NEED_DATA for e in events[:-1])
    expect_poll_results(events[-1])


def test_stale_replies_before_the_sync_are_skipped_whatever_they_look_like() -> None:
    """An earlier client's abandoned reply, an id-less error (which tells nothing when the
    sync carried no id), garbage, and half a reply cut by the 0xFF before the sync's."""
    s = session(AgentTraits(ids=IdMode.ECHOED))
    s.start(POLL, read_only=True)
    a, b, c = [r["id"] for r in requests_in(s.data_to_send())[1:]]
    stale = b'{"return": {"old": true}, "id": 99}\n' + REFUSED + b'not json\n{"return": {"half": '
    event = run(s, stale + b'\xff{"return": 1000}\n' + answers(a, b, c))
    expect_poll_results(event)
    assert s.traits.ids is IdMode.ECHOED  # no probe went out: nothing relearnt


def test_a_guest_changing_request_waits_for_the_syncs_reply() -> None:
    s = session(AgentTraits(ids=IdMode.ECHOED))
    s.start([("guest-fsfreeze-freeze", None)])
    (sync,) = requests_in(s.data_to_send())
    assert sync["execute"] == "guest-sync-delimited" and "id" not in sync
    assert not s.request_sent
    assert run(s, STRAY_FF + b'{"return": 5, "id": 1}\n') is NEED_DATA  # stale, not ours
    assert s.data_to_send() == b""
    assert run(s, b'\xff{"return": 1000}\n') is NEED_DATA
    (freeze,) = requests_in(s.data_to_send())
    assert freeze["execute"] == "guest-fsfreeze-freeze" and s.request_sent
    assert run(s, b'{"return": 2, "id": %d}\n' % freeze["id"]).results == [b"2"]


# -- old agents -------------------------------------------------------------------------


def test_an_agent_that_refuses_ids_is_synced_again_without_and_never_gets_one_again() -> None:
    """qemu-ga before 2.12: any member besides execute and arguments is an error."""
    traits = AgentTraits()
    s = session(traits)
    s.start(POLL, read_only=True)
    s.data_to_send()
    # The 0xFF's parse error, the probe refused, then the three poll requests answered
    # (they had no id), all before our sync: the session cannot trust them.
    assert run(s, OLD_STRAY + REFUSED + answers(None, None, None)) is NEED_DATA
    assert traits.ids is IdMode.REFUSED and traits.note == IDS_REFUSED_NOTE
    again = s.data_to_send()
    assert again.startswith(b"\xff")
    sync, *polled = requests_in(again)
    assert sync == {"execute": "guest-sync-delimited", "arguments": {"id": SYNC + 1}}
    assert polled == [{"execute": name} for name, _ in POLL]
    expect_poll_results(run(s, OLD_STRAY + b'\xff{"return": 1001}\n' + answers(None, None, None)))
    # The next connection to the same agent (same traits) sends no id at all.
    fresh = session(traits, first_sync=2000)
    fresh.start([("guest-fsfreeze-thaw", None)])
    assert requests_in(fresh.data_to_send()) == [
        {"execute": "guest-sync-delimited", "arguments": {"id": 2000}}
    ]
    assert run(fresh, b'\xff{"return": 2000}\n') is NEED_DATA
    assert requests_in(fresh.data_to_send()) == [{"execute": "guest-fsfreeze-thaw"}]


def test_qemu_ga_1_0_refuses_the_id_then_lacks_sync_delimited_then_syncs_with_guest_sync() -> None:
    traits = AgentTraits()
    s = session(traits)
    s.start([("guest-info", None)], read_only=True)
    s.data_to_send()
    assert run(s, REFUSED_10) is NEED_DATA
    assert requests_in(s.data_to_send())[0]["execute"] == "guest-sync-delimited"
    assert run(s, b'{"return": {"version": "1.0"}}\n' + NO_DELIMITED) is NEED_DATA
    assert traits.delimited_sync is False and traits.note == PLAIN_SYNC_NOTE
    again = s.data_to_send()
    assert again.startswith(b"\xff")
    assert requests_in(again) == [
        {"execute": "guest-sync", "arguments": {"id": SYNC + 2}},
        {"execute": "guest-info"},
    ]
    # guest-sync's reply has no 0xFF; line by line, everything before it is skipped.
    event = run(
        s,
        b'{"return": {"version": "1.0"}}\n' + OLD_STRAY + b'{"return": 1002}\n'
        b'{"return": {"version": "1.0"}}\n',
    )
    assert isinstance(event, Done) and event.results == [b'{"version": "1.0"}']
    assert traits.info == b'{"version": "1.0"}'


def test_an_agent_that_takes_ids_but_never_echoes_them_gets_none() -> None:
    """qemu-ga 2.12 accepted a request id and answered without it."""
    s = session()
    s.start([("guest-ping", None)], read_only=True)
    s.data_to_send()
    assert run(s, STRAY_FF + b'\xff{"return": 1000}\n{"return": {}}\n').results == [b"{}"]
    assert s.traits.ids is IdMode.IGNORED
    s.start([("guest-ping", None)], read_only=True)
    assert requests_in(s.data_to_send()) == [{"execute": "guest-ping"}]


def test_an_agent_that_knows_no_sync_at_all_fails_at_once_and_stays_unsynced() -> None:
    s = session(AgentTraits(ids=IdMode.REFUSED, delimited_sync=False))
    s.start([("guest-ping", None)], read_only=True)
    s.data_to_send()
    event = run(
        s,
        b'{"error": {"class": "CommandNotFound", '
        b'"desc": "The command guest-sync has not been found"}}\n',
    )
    assert isinstance(event, Failed) and isinstance(event.error, AgentProtocolError)
    assert "neither guest-sync-delimited nor guest-sync" in str(event.error)
    assert s.state is Runstate.UNSYNCED  # (_on_sync_message 40)


def test_an_agent_replaced_by_one_that_refuses_ids_gets_the_batch_again() -> None:
    traits = AgentTraits(ids=IdMode.ECHOED)
    s = session(traits)
    s.start([("guest-fsfreeze-freeze", None)])
    s.data_to_send()
    run(s, b'\xff{"return": 1000}\n')
    (freeze,) = requests_in(s.data_to_send())
    assert "id" in freeze
    assert run(s, REFUSED) is NEED_DATA
    assert traits.ids is IdMode.REFUSED
    # The refused freeze did not run: sync again, and only then send it, without an id.
    assert [r["execute"] for r in requests_in(s.data_to_send())] == ["guest-sync-delimited"]
    assert run(s, b'\xff{"return": 1001}\n') is NEED_DATA
    assert requests_in(s.data_to_send()) == [{"execute": "guest-fsfreeze-freeze"}]
    assert run(s, b'{"return": 1}\n').results == [b"1"]


# -- matching replies -------------------------------------------------------------------


def in_sync(ids: IdMode = IdMode.ECHOED) -> Session:
    s = session(AgentTraits(ids=ids))
    s.sync()
    s.data_to_send()
    assert isinstance(run(s, b'\xff{"return": 1000}\n'), Done)
    assert s.state is Runstate.READY
    return s


def sent_ids(s: Session) -> list[int]:
    return [r["id"] for r in requests_in(s.data_to_send())]


def test_with_ids_a_stale_or_repeated_reply_is_dropped() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    a, b, c = sent_ids(s)
    stream = answers(a) + answers(a) + b'{"return": "old", "id": 7}\n'
    stream += b'{"return": "thawed", "id": %d}\n{"return": {"host-name": "web-1"}, "id": %d}\n' % (
        b,
        c,
    )
    expect_poll_results(run(s, stream))


def test_with_ids_a_lost_reply_fails_the_batch_at_once() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    _, b, _ = sent_ids(s)
    event = run(s, b'{"return": "thawed", "id": %d}\n' % b)
    assert isinstance(event, Failed) and "no reply to guest-info" in str(event.error)
    assert s.state is Runstate.UNSYNCED


def test_without_ids_a_lost_reply_leaves_the_batch_waiting_until_it_expires() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL, read_only=True)
    s.data_to_send()
    assert run(s, answers(None, None)) is NEED_DATA  # two replies of three
    assert s.expire() is None
    assert s.state is Runstate.UNSYNCED


def test_a_reply_after_its_timeout_is_skipped_by_the_next_sync() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    assert s.next_event() is NEED_DATA
    s.expire()
    s.start(POLL[1:2], read_only=True)
    assert s.data_to_send().startswith(b"\xff")  # unknown state: sync first
    late = b'{"return": "frozen"}\n'
    event = run(s, late + OLD_STRAY + b'\xff{"return": 1001}\n{"return": "thawed"}\n')
    assert isinstance(event, Done) and event.results == [b'"thawed"']


def test_id_less_error_replies_are_the_answers_in_order_when_no_ids_were_sent() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL, read_only=True)
    s.data_to_send()
    disabled = (
        b'{"error": {"class": "GenericError", '
        b'"desc": "The command guest-get-host-name has been disabled for this instance"}}\n'
    )
    event = run(s, answers(None, None) + disabled)
    assert isinstance(event, Done)
    error = event.results[2]
    assert isinstance(error, AgentCommandError) and error.disabled
    assert error.command == "guest-get-host-name"


def test_id_less_errors_are_noise_when_every_request_had_an_id() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    a, b, c = sent_ids(s)
    event = run(s, STRAY_FF + answers(a, b, c))
    expect_poll_results(event)


def test_a_reply_carrying_an_id_we_never_sent_is_not_ours() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL[:1], read_only=True)
    s.data_to_send()
    assert run(s, b'{"return": {"old": 1}, "id": 5}\n') is NEED_DATA
    assert run(s, answers(None)).results == [INFO]


def test_ff_mid_reply_while_in_sync_loses_that_reply() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL[:1], read_only=True)
    s.data_to_send()
    assert run(s, b'{"return": {"version": ') is NEED_DATA
    assert run(s, b"\xff") is NEED_DATA
    assert s.buffered == 0
    assert s.expire() is None


def test_replies_beyond_the_batch_make_the_next_batch_sync_first() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    assert run(s, b'{"return": "thawed"}\n{"return": "thawed"}\n').results == [b'"thawed"']
    assert s.state is Runstate.UNSYNCED
    s.start(POLL[1:2], read_only=True)
    assert s.data_to_send().startswith(b"\xff")


def test_garbage_in_a_batch_fails_it_and_the_next_one_syncs() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    s.data_to_send()
    event = run(s, b"<html>502</html>\n")
    assert isinstance(event, Failed) and isinstance(event.error, AgentProtocolError)
    assert s.state is Runstate.UNSYNCED


def test_a_channel_closed_mid_reply_is_garbage_and_between_replies_a_lost_channel() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    s.data_to_send()
    s.receive_data(b'{"return": {"vers')
    event = run(s, b"")
    assert isinstance(event, Failed) and "middle of a reply" in str(event.error)
    s = in_sync()
    s.start(POLL, read_only=True)
    s.data_to_send()
    event = run(s, b"")
    assert isinstance(event, Failed) and isinstance(event.error, AgentConnectionError)
    assert str(event.error) == "the agent's channel closed"
    assert s.state is Runstate.CLOSED


def test_guest_info_replies_are_remembered_for_the_agent() -> None:
    s = in_sync(IdMode.REFUSED)
    s.start(POLL, read_only=True)
    s.data_to_send()
    expect_poll_results(run(s, answers(None, None, None)))
    assert s.traits.info == INFO


# -- commands that answer nothing on success --------------------------------------------


@pytest.mark.parametrize("ids", [IdMode.ECHOED, IdMode.REFUSED])
def test_a_no_reply_command_ends_a_batch_and_is_done_when_its_grace_expires(ids: IdMode) -> None:
    s = in_sync(ids)
    s.start([("guest-fsfreeze-status", None), ("guest-shutdown", {"mode": "halt"})])
    sent = requests_in(s.data_to_send())
    assert [r["execute"] for r in sent] == ["guest-fsfreeze-status", "guest-shutdown"]
    assert ("id" in sent[0]) is (ids is IdMode.ECHOED)
    tail = b', "id": %d' % sent[0]["id"] if "id" in sent[0] else b""
    first = b'{"return": "thawed"' + tail + b"}\n"
    assert run(s, first) is NEED_DATA  # shutdown may still report an error
    done = s.expire()
    assert done is not None and done.results == [b'"thawed"', NO_ERROR_REPLY]
    assert s.state is Runstate.UNSYNCED  # the guest may be going away


@pytest.mark.parametrize("ids", [IdMode.ECHOED, IdMode.REFUSED])
def test_a_no_reply_commands_error_is_its_result(ids: IdMode) -> None:
    s = in_sync(ids)
    s.start([("guest-suspend-hybrid", None)])
    (sent,) = requests_in(s.data_to_send())
    tail = b', "id": %d' % sent["id"] if "id" in sent else b""
    error = (
        b'{"error": {"class": "GenericError", '
        b'"desc": "the requested suspend mode is not supported by the guest"}' + tail + b"}\n"
    )
    event = run(s, error)
    assert isinstance(event, Done)
    (result,) = event.results
    assert isinstance(result, AgentCommandError) and "not supported" in result.desc
    assert s.state is Runstate.UNSYNCED


def test_a_no_reply_command_whose_guest_goes_away_closes_the_channel() -> None:
    s = in_sync()
    s.start([("guest-shutdown", None)])
    s.data_to_send()
    event = run(s, b"")
    assert isinstance(event, Done) and isinstance(event.results[0], AgentConnectionError)
    assert str(event.results[0]) == "the agent's channel closed"
    assert s.state is Runstate.CLOSED


def test_a_channel_closed_before_the_replies_ahead_of_a_no_reply_command_fails_the_batch() -> None:
    s = in_sync()
    s.start([("guest-ping", None), ("guest-shutdown", None)])
    s.data_to_send()
    event = run(s, b"")  # the ping was never answered: the shutdown may not have been read
    assert isinstance(event, Failed) and str(event.error) == "the agent's channel closed"


def test_a_no_reply_command_can_only_be_last() -> None:
    s = in_sync()
    with pytest.raises(ValueError, match="only be the last"):
        s.start([("guest-shutdown", None), ("guest-ping", None)])
    assert s.state is Runstate.READY  # nothing was queued
    assert s.data_to_send() == b""


def test_one_batch_at_a_time() -> None:
    s = in_sync()
    s.start([("guest-ping", None)])
    with pytest.raises(RuntimeError):
        s.start([("guest-ping", None)])


def test_sync_on_a_closed_session_or_during_a_batch_is_refused() -> None:
    s = in_sync()
    s.start([("guest-ping", None)])
    with pytest.raises(RuntimeError, match=r"a batch is already out \(session busy\)"):
        s.sync()  # BUSY
    syncing = session()
    syncing.sync()
    with pytest.raises(RuntimeError, match=r"a batch is already out \(session syncing\)"):
        syncing.sync()  # SYNCING
    s.close()
    with pytest.raises(AgentConnectionError, match=r"^the connection to the agent is closed$"):
        s.sync()


def test_a_read_only_batch_refused_by_a_new_agent_goes_again_right_behind_the_sync() -> None:
    traits = AgentTraits(ids=IdMode.ECHOED)
    s = session(traits)
    s.sync()
    s.data_to_send()
    assert isinstance(run(s, b'\xff{"return": 1000}\n'), Done)
    s.start([("guest-info", None), ("guest-get-host-name", None)], read_only=True)
    assert [r.get("id") is not None for r in requests_in(s.data_to_send())] == [True, True]
    assert run(s, REFUSED) is NEED_DATA  # the agent was replaced by one refusing ids
    assert traits.ids is IdMode.REFUSED and traits.note == IDS_REFUSED_NOTE
    assert s.request_sent is True
    # Read-only requests need not wait for the sync's reply: all go out at once, no ids.
    assert requests_in(s.data_to_send()) == [
        {"execute": "guest-sync-delimited", "arguments": {"id": 1001}},
        {"execute": "guest-info"},
        {"execute": "guest-get-host-name"},
    ]


def test_a_refused_guest_changing_batch_is_not_sent_until_the_sync_is_answered() -> None:
    traits = AgentTraits(ids=IdMode.ECHOED)
    s = session(traits)
    s.sync()
    s.data_to_send()
    assert isinstance(run(s, b'\xff{"return": 1000}\n'), Done)
    s.start([("guest-fsfreeze-freeze", None)])
    s.data_to_send()
    assert s.request_sent is True
    assert run(s, REFUSED) is NEED_DATA
    assert traits.note == IDS_REFUSED_NOTE
    assert s.request_sent is False  # not yet out again: waits for the new sync's reply
    assert [r["execute"] for r in requests_in(s.data_to_send())] == ["guest-sync-delimited"]


def test_events_and_sentinels_read_by_name_in_logs_and_failed_assertions() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(NO_ERROR_REPLY) == "NO_ERROR_REPLY"
    assert repr(Done([b"1", NO_ERROR_REPLY])) == "Done([b'1', NO_ERROR_REPLY])"


def test_a_lone_no_reply_command_is_done_when_its_grace_expires() -> None:
    s = in_sync()
    s.start([("guest-shutdown", {"mode": "powerdown"})])
    s.data_to_send()
    done = s.expire()
    assert done is not None and done.results == [NO_ERROR_REPLY]


def test_a_reply_past_the_sessions_cap_fails_the_batch_and_the_next_one_syncs() -> None:
    """The guest is untrusted: a reply longer than `max_reply` is never kept whole."""
    s = Session(AgentTraits(ids=IdMode.REFUSED), max_reply=4096, sync_ids=itertools.count(SYNC))
    s.sync()
    s.data_to_send()
    assert isinstance(run(s, b'\xff{"return": 1000}\n'), Done)
    s.start([("guest-get-host-name", None)], read_only=True)
    s.data_to_send()
    huge = b'{"return": {"host-name": "' + b"a" * 5000 + b'"}}\n'
    event = run(s, huge)
    assert isinstance(event, Failed) and isinstance(event.error, AgentProtocolError), event
    assert s.state is Runstate.UNSYNCED


# -- from the mutation run's survivors ---------------------------------------------------


def test_replies_in_another_layout_are_matched_by_their_decoded_values() -> None:
    """Not every agent writes `{"return": VALUE}` byte for byte: a reply in any other
    layout is decoded, and the sync's value and a request's result are read from it."""
    s = session(AgentTraits(ids=IdMode.REFUSED))
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    event = run(s, b'\xff{"return":1000}\n{"return":"thawed"}\n')
    assert isinstance(event, Done) and event.results == ["thawed"]


def test_stale_replies_in_another_layout_do_not_pass_for_the_syncs_reply() -> None:
    s = session(AgentTraits(ids=IdMode.REFUSED))
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    stale = b'{"return":{"old":1}}\n{"return":999}\n'
    event = run(s, stale + b'\xff{"return":1000}\n{"return":"thawed"}\n')
    assert isinstance(event, Done) and event.results == ["thawed"]


def test_a_reply_nobody_asked_for_makes_the_next_batch_sync_first() -> None:
    s = in_sync(IdMode.REFUSED)
    assert run(s, b'{"return": "unasked"}\n') is NEED_DATA
    assert s.state is Runstate.UNSYNCED
    s.start(POLL[1:2], read_only=True)
    assert s.data_to_send().startswith(b"\xff")


def test_replies_received_in_two_reads_before_the_session_is_asked_are_all_kept() -> None:
    s = session(AgentTraits(ids=IdMode.REFUSED))
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    s.receive_data(b'\xff{"return": 1000}\n')
    s.receive_data(b'{"return": "thawed"}\n')
    event = s.next_event()
    assert isinstance(event, Done) and event.results == [b'"thawed"']


def test_garbage_in_a_batch_fails_it_with_the_reason() -> None:
    s = in_sync()
    s.start(POLL, read_only=True)
    s.data_to_send()
    event = run(s, b"<html>502</html>\n")
    assert isinstance(event, Failed)
    assert str(event.error).startswith("invalid JSON from agent")


def test_a_guest_info_error_does_not_replace_the_remembered_info() -> None:
    s = in_sync(IdMode.REFUSED)
    s.traits.info = INFO
    s.start(POLL[:1], read_only=True)
    s.data_to_send()
    event = run(s, b'{"error": {"class": "GenericError", "desc": "busy"}}\n')
    assert isinstance(event, Done) and isinstance(event.results[0], AgentCommandError)
    assert s.traits.info == INFO


def test_a_batch_without_guest_info_leaves_the_remembered_info_alone() -> None:
    s = in_sync(IdMode.REFUSED)
    s.traits.info = INFO
    s.start([("guest-ping", None), ("guest-fsfreeze-status", None)], read_only=True)
    s.data_to_send()
    event = run(s, b'{"return": {}}\n{"return": "thawed"}\n')
    assert isinstance(event, Done) and event.results == [b"{}", b'"thawed"']
    assert s.traits.info == INFO


def test_another_commands_not_found_error_while_syncing_keeps_guest_sync_delimited() -> None:
    """An earlier client's CommandNotFound is stale: only guest-sync-delimited's own
    makes the session fall back to guest-sync."""
    traits = AgentTraits(ids=IdMode.REFUSED)
    s = session(traits)
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    stale = (
        b'{"error": {"class": "CommandNotFound", '
        b'"desc": "The command guest-get-users has not been found"}}\n'
    )
    event = run(s, stale + b'\xff{"return": 1000}\n{"return": "thawed"}\n')
    assert isinstance(event, Done) and event.results == [b'"thawed"']
    assert traits.delimited_sync is True and traits.note is None


def test_a_sync_alone_is_done_with_no_results() -> None:
    s = session(AgentTraits(ids=IdMode.ECHOED))
    s.sync()
    s.data_to_send()
    event = run(s, b'\xff{"return": 1000}\n')
    assert isinstance(event, Done) and event.results == []


def test_a_fresh_session_is_unsynced_has_sent_nothing_and_skips_what_it_reads() -> None:
    s = session(AgentTraits(ids=IdMode.REFUSED))
    assert s.state is Runstate.UNSYNCED
    assert s.request_sent is False and s.noise is None
    assert run(s, b'{"return": "stale"}\n') is NEED_DATA  # before any batch: not ours
    s.start(POLL[1:2], read_only=True)
    s.data_to_send()
    assert run(s, b'\xff{"return": 1000}\n{"return": "thawed"}\n').results == [b'"thawed"']


def test_a_batch_on_a_closed_session_or_during_a_batch_is_refused_saying_why() -> None:
    s = in_sync()
    s.start([("guest-ping", None)])
    with pytest.raises(RuntimeError, match=r"^a batch is already out \(session busy\)$"):
        s.start([("guest-ping", None)])
    s.close()
    with pytest.raises(AgentConnectionError, match=r"^the connection to the agent is closed$"):
        s.start([("guest-ping", None)])


def test_sync_and_request_ids_are_drawn_from_a_wide_range() -> None:
    """A stale reply from an earlier connection must not match by chance: ids are random
    over a wide range, not a small one."""
    syncs, firsts = [], []
    for _ in range(8):
        s = Session(AgentTraits(ids=IdMode.ECHOED))
        s.start(POLL[:1], read_only=True)
        sync, request = requests_in(s.data_to_send())
        syncs.append(sync["arguments"]["id"])
        firsts.append(request["id"])
    assert max(syncs) > 2**32 and max(firsts) > 2**20


def test_a_sync_id_is_a_positive_signed_64_bit_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent takes the sync id as an int64: the extremes of the draw must fit."""
    monkeypatch.setattr(random, "randint", lambda low, high: high)
    assert new_sync_id() == 2**63 - 1
    monkeypatch.setattr(random, "randint", lambda low, high: low)
    assert new_sync_id() == 1


def test_an_empty_batch_in_sync_is_a_sync_and_is_done_with_no_results() -> None:
    """Found by mutation testing: sent as is, it waited for a reply that never comes."""
    s = in_sync()
    s.start([])
    (request,) = requests_in(s.data_to_send())
    assert request["execute"] == "guest-sync-delimited"
    event = run(s, b'\xff{"return": %d}\n' % request["arguments"]["id"])
    assert isinstance(event, Done) and event.results == []
    assert s.state is Runstate.READY
