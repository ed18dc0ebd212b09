"""The simulated agent without sockets: bytes in, outputs out (sans-IO)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any

import pytest

from qgadash.sim.agent import Close, GuestAgent, Pause, PowerOff, Stream
from qgadash.sim.fleet import assign_faults, fleet_slice, write_hosts_toml
from qgadash.sim.profiles import Fault, GuestProfile, demo_fleet, hostile_text, make_profile
from qgadash.sim.wire import JsonError, RequestStream


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def linux(index: int = 0, **changes: Any) -> GuestAgent:
    return agent_for(make_profile(index), **changes)


def agent_for(
    profile: GuestProfile,
    fault: Fault = Fault.NONE,
    clock: FakeClock | None = None,
    **changes: Any,
) -> GuestAgent:
    """An agent for `profile`; keyword arguments change the profile's fields."""
    if changes:
        profile = dataclasses.replace(profile, **changes)
    clock = clock or FakeClock()
    return GuestAgent(profile, fault, clock=clock, wall=lambda: 1_764_000_000.0 + clock.now)


def windows_profile() -> GuestProfile:
    profile = next(make_profile(i) for i in range(20) if make_profile(i).windows)
    return profile


def replies(agent: GuestAgent, data: bytes) -> list[bytes]:
    out = agent.receive(data)
    return [item for item in out if isinstance(item, bytes)]


def call(
    agent: GuestAgent, command: str, arguments: dict[str, object] | None = None, rid: object = None
) -> dict[str, Any]:
    """One request's reply, parsed (JSON: its shape is what the test asserts)."""
    request: dict[str, object] = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    if rid is not None:
        request["id"] = rid
    got = replies(agent, json.dumps(request).encode())
    assert len(got) == 1, got
    result = json.loads(got[0])
    assert isinstance(result, dict)
    return result


# --- the request stream, as QEMU parses it ---------------------------------------------


def test_stray_ff_gives_parse_error_then_the_request() -> None:
    stream = RequestStream()
    out = stream.feed(b'\xff{"execute":"guest-ping"}')
    assert out == [JsonError("JSON parse error, stray '\ufffd'"), {"execute": "guest-ping"}]


def test_half_sent_request_waits_for_the_rest() -> None:
    stream = RequestStream()
    assert stream.feed(b'{"execute": "guest-p') == []
    assert stream.feed(b'ing", "id": "a\\') == []
    assert stream.feed(b'nb"}') == [{"execute": "guest-ping", "id": "a\nb"}]


def test_garbage_recovers_at_the_next_structural_character() -> None:
    out = RequestStream().feed(b'{"execute":"x","arguments":{"pid":PIDX}}')
    assert out == [
        JsonError("JSON parse error, stray 'P'"),
        JsonError("JSON parse error, expecting value"),
        JsonError("JSON parse error, expecting value"),
    ]


def test_keyword_waits_for_a_delimiter_like_qemu() -> None:
    stream = RequestStream()
    assert stream.feed(b"hello") == []
    assert stream.feed(b" ") == [JsonError("JSON parse error, invalid keyword 'hello'")]


def test_qemu_extensions_and_limits() -> None:
    stream = RequestStream()
    assert stream.feed(b"{'a': 'it\\'s'}") == [{"a": "it's"}]
    assert stream.feed(b'{"a": 1, "a": 2}') == [JsonError("JSON parse error, duplicate key")]
    assert stream.feed(b'["\\ud800"]') == [
        JsonError("JSON parse error, \\ud800 is not a valid Unicode character")
    ]
    assert stream.feed(b'["\xc3("]') == [
        JsonError("JSON parse error, invalid UTF-8 sequence in string")
    ]
    deep = stream.feed(b"[" * 1025)
    assert deep == [JsonError("JSON nesting depth limit exceeded")]


def test_integers_beyond_64_bits_become_floats() -> None:
    assert RequestStream().feed(b"[18446744073709551616]") == [[1.8446744073709552e19]]


# --- replies ------------------------------------------------------------------------------


def test_sync_delimited_reply_starts_with_ff_and_echoes_id() -> None:
    agent = linux()
    got = replies(agent, b'\xff{"execute":"guest-sync-delimited","arguments":{"id":42},"id":"x"}')
    assert got == [
        b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n',
        b'\xff{"return": 42, "id": "x"}\n',
    ]


def test_error_reply_puts_id_first_like_qemu() -> None:
    got = replies(linux(), b'{"execute":"guest-nope","id":4}')
    assert got == [
        b'{"id": 4, "error": {"class": "CommandNotFound", '
        b'"desc": "The command guest-nope has not been found"}}\n'
    ]


def test_members_other_than_execute_arguments_id_are_rejected() -> None:
    assert call(linux(), "guest-ping", rid=1) == {"return": {}, "id": 1}
    got = replies(linux(), b'{"execute":"guest-ping","extra":1}')
    assert json.loads(got[0])["error"]["desc"] == "QMP input member 'extra' is unexpected"


def test_argument_checks_use_qemu_texts() -> None:
    agent = linux()
    assert call(agent, "guest-exec-status", {})["error"] == {
        "class": "GenericError",
        "desc": "Parameter 'pid' is missing",
    }
    assert call(agent, "guest-exec-status", {"pid": "a"})["error"]["desc"] == (
        "Invalid parameter type for 'pid', expected: integer"
    )
    assert call(agent, "guest-ping", {"x": 1})["error"]["desc"] == ("Parameter 'x' is unexpected")


def test_floats_are_printed_with_17_significant_digits() -> None:
    got = replies(linux(), b'{"execute":"guest-ping","id":0.1}')
    assert got == [b'{"return": {}, "id": 0.10000000000000001}\n']


def test_guest_info_lists_commands_with_flags() -> None:
    info = call(linux(0), "guest-info")["return"]
    assert isinstance(info, dict)
    assert info["version"] == "7.2.22"
    entry = info["supported_commands"][0]
    assert set(entry) == {"name", "enabled", "success-response"}
    flags = {c["name"]: c for c in info["supported_commands"]}
    assert flags["guest-shutdown"]["success-response"] is False
    assert flags["guest-get-devices"]["enabled"] is False  # not on Linux
    assert "guest-get-load" not in flags  # only agents >= 10.0


def test_newer_agent_offers_guest_get_load_with_real_member_names() -> None:
    agent = linux(agent_version="10.0.3")
    load = call(agent, "guest-get-load")["return"]
    assert set(load) == {"load1m", "load5m", "load15m"}


def test_disabled_command_texts() -> None:
    old = linux(disabled_commands=frozenset({"guest-exec"}))
    assert call(old, "guest-exec", {"path": "/bin/true"})["error"] == {
        "class": "CommandNotFound",
        "desc": "Command guest-exec has been disabled",
    }
    win = agent_for(windows_profile())
    error = call(win, "guest-exec", {"path": "cmd.exe"})["error"]
    assert error == {
        "class": "CommandNotFound",
        "desc": "Command guest-exec has been disabled: the command is not allowed",
    }
    info = call(win, "guest-info")["return"]
    flags = {c["name"]: c["enabled"] for c in info["supported_commands"]}
    assert flags["guest-exec"] is False


def test_frozen_allows_only_the_freeze_allow_list() -> None:
    agent = linux()
    assert call(agent, "guest-fsfreeze-freeze")["return"] == 2
    error = call(agent, "guest-exec", {"path": "/bin/true"})["error"]
    assert error["desc"] == ("Command guest-exec has been disabled: the agent is in frozen state")
    assert call(agent, "guest-fsfreeze-status")["return"] == "frozen"
    assert call(agent, "guest-info")["return"]
    assert call(agent, "guest-fsfreeze-thaw")["return"] == 2
    assert call(agent, "guest-fsfreeze-thaw")["return"] == 0  # a second thaw
    assert call(agent, "guest-fsfreeze-status")["return"] == "thawed"


def test_windows_thaw_after_ten_seconds_fails_and_the_guest_is_thawed_all_the_same() -> None:
    clock = FakeClock()
    agent = agent_for(windows_profile(), clock=clock)
    call(agent, "guest-fsfreeze-freeze")
    assert call(agent, "guest-fsfreeze-status")["return"] == "frozen"
    clock.now += 11  # VSS let the writes go after 10 s; the agent still says frozen
    assert call(agent, "guest-fsfreeze-status")["return"] == "frozen"
    assert call(agent, "guest-fsfreeze-thaw")["error"]["desc"] == (
        "couldn't hold writes: fsfreeze is limited up to 10 seconds"
    )
    assert call(agent, "guest-fsfreeze-status")["return"] == "thawed"
    assert call(agent, "guest-fsfreeze-thaw")["return"] == 0


def test_shutdown_sends_no_reply_and_powers_off() -> None:
    agent = linux()
    out = agent.receive(b'{"execute":"guest-shutdown","id":1}')
    assert out == [Pause(2.0), PowerOff()]
    assert agent.receive(b'{"execute":"guest-ping","id":2}') == []
    bad = call(linux(), "guest-shutdown", {"mode": "off"})
    assert bad["error"]["desc"] == ("Parameter 'mode' expects 'halt', 'powerdown' or 'reboot'")


def test_reboot_answers_queued_requests_later() -> None:
    agent = linux()
    assert agent.receive(b'{"execute":"guest-shutdown","arguments":{"mode":"reboot"}}') == []
    out = agent.receive(b'{"execute":"guest-ping","id":1}')
    assert isinstance(out[0], Pause) and out[0].seconds == pytest.approx(5.0)
    assert out[1] == b'{"return": {}, "id": 1}\n'


# --- files and exec ------------------------------------------------------------------


def test_file_handles_read_write_seek() -> None:
    agent = linux()
    handle = call(agent, "guest-file-open", {"path": "/etc/hostname"})["return"]
    assert handle == 1000
    content = agent.profile.hostname.encode() + b"\n"
    got = call(agent, "guest-file-read", {"handle": handle, "count": 3})["return"]
    assert got == {"count": 3, "buf-b64": base64.b64encode(content[:3]).decode(), "eof": False}
    rest = call(agent, "guest-file-read", {"handle": handle})["return"]
    assert rest == {
        "count": len(content) - 3,
        "buf-b64": base64.b64encode(content[3:]).decode(),
        "eof": True,
    }
    assert call(agent, "guest-file-read", {"handle": handle, "count": -1})["error"]["desc"] == (
        "value '-1' is invalid for argument count"
    )
    assert call(agent, "guest-file-close", {"handle": handle})["return"] == {}
    assert call(agent, "guest-file-close", {"handle": handle})["error"]["desc"] == (
        "handle '1000' has not been found"
    )

    w = call(agent, "guest-file-open", {"path": "/data/new.txt", "mode": "w+"})["return"]
    wrote = call(
        agent, "guest-file-write", {"handle": w, "buf-b64": base64.b64encode(b"hello").decode()}
    )["return"]
    assert wrote == {"count": 5, "eof": False}
    assert call(agent, "guest-file-seek", {"handle": w, "offset": 0, "whence": "set"})[
        "return"
    ] == {"eof": False, "position": 0}
    back = call(agent, "guest-file-read", {"handle": w})["return"]
    assert base64.b64decode(back["buf-b64"]) == b"hello"
    missing = call(agent, "guest-file-open", {"path": "/nope/x"})["error"]["desc"]
    assert missing == "failed to open file '/nope/x' (mode: 'r'): No such file or directory"
    d = call(agent, "guest-file-open", {"path": "/etc"})["return"]
    assert call(agent, "guest-file-read", {"handle": d})["error"]["desc"] == (
        "failed to read file: Is a directory"
    )


def test_log_grows_over_time() -> None:
    clock = FakeClock()
    agent = agent_for(make_profile(0), clock=clock)
    h = call(agent, "guest-file-open", {"path": "/var/log/messages"})["return"]
    first = call(agent, "guest-file-read", {"handle": h, "count": 1 << 20})["return"]
    clock.now += 30
    more = call(agent, "guest-file-read", {"handle": h, "count": 1 << 20})["return"]
    assert first["count"] > 0 and more["count"] > 0


def run_exec(agent: GuestAgent, clock: FakeClock, path: str, args: list[str]) -> dict[str, object]:
    pid = call(agent, "guest-exec", {"path": path, "arg": args, "capture-output": True})["return"][
        "pid"
    ]
    assert call(agent, "guest-exec-status", {"pid": pid})["return"] == {"exited": False}
    clock.now += 5
    status = call(agent, "guest-exec-status", {"pid": pid})["return"]
    assert call(agent, "guest-exec-status", {"pid": pid})["error"]["desc"] == (
        "Invalid parameter 'pid'"
    )
    assert isinstance(status, dict)
    return status


LISTING = "cd \"$1\" && stat -c '%f %s %Y %n' -- .[!.]* * 2>/dev/null"


def test_listing_command_prints_stat_lines() -> None:
    clock = FakeClock()
    agent = agent_for(make_profile(0), clock=clock)
    status = run_exec(agent, clock, "/bin/sh", ["-c", LISTING, "qgadash-ls", "/data"])
    assert status["exitcode"] == 0 and status["exited"] is True
    lines = base64.b64decode(str(status["out-data"])).decode().splitlines()
    assert all(re.fullmatch(r"[0-9a-f]+ \d+ \d+ .+", line) for line in lines)
    by_name = {line.split(" ", 3)[3]: line for line in lines}
    assert by_name["backups"].startswith("41ed 4096 ")
    assert by_name["blob.bin"].startswith("81a4 65536 ")
    assert "." not in by_name and ".." not in by_name
    hidden = run_exec(agent, clock, "/bin/sh", ["-c", LISTING, "qgadash-ls", "/var/log"])
    assert ".hidden" in base64.b64decode(str(hidden["out-data"])).decode()
    missing = run_exec(agent, clock, "/bin/sh", ["-c", LISTING, "qgadash-ls", "/nope"])
    assert missing["exitcode"] == 1 and "out-data" not in missing
    assert b"No such file" in base64.b64decode(str(missing["err-data"]))


def test_exec_echo_and_unknown_command() -> None:
    clock = FakeClock()
    agent = agent_for(make_profile(0), clock=clock)
    echo = run_exec(agent, clock, "/bin/echo", ["hi", "there"])
    assert base64.b64decode(str(echo["out-data"])) == b"hi there\n"
    assert echo["out-truncated"] is False
    unknown = run_exec(agent, clock, "/bin/sh", ["-c", "frobnicate --now"])
    assert unknown["exitcode"] == 127
    assert base64.b64decode(str(unknown["err-data"])) == b"sh: 1: frobnicate: not found\n"
    gone = call(agent, "guest-exec", {"path": "/nonexistent"})["error"]["desc"]
    assert gone.startswith("Guest agent command failed, error was 'Failed to execute child")


def test_counters_grow_and_load_wanders() -> None:
    clock = FakeClock()
    agent = agent_for(make_profile(1), clock=clock)
    before = call(agent, "guest-network-get-interfaces")["return"]
    clock.now += 10
    after = call(agent, "guest-network-get-interfaces")["return"]
    rx0 = before[1]["statistics"]["rx-bytes"]
    rx1 = after[1]["statistics"]["rx-bytes"]
    assert rx1 > rx0
    agent10 = agent_for(make_profile(7), clock=clock)  # Fedora, agent 10.0
    loads = set()
    for _ in range(5):
        clock.now += 7
        loads.add(call(agent10, "guest-get-load")["return"]["load1m"])
    assert len(loads) > 1


# --- faults as outputs -------------------------------------------------------------------


SYNC = b'\xff{"execute":"guest-sync-delimited","arguments":{"id":9}}'


def test_slow_and_late_faults_pause_before_each_reply() -> None:
    slow = agent_for(make_profile(0), Fault.SLOW).receive(b'{"execute":"guest-ping"}')
    assert slow[0] == Pause(0.2)
    late = agent_for(make_profile(0), Fault.LATE_REPLY).receive(b'{"execute":"guest-ping"}')
    assert late[0] == Pause(4.0)


def test_huge_and_oversize_replies_are_streamed() -> None:
    out = agent_for(make_profile(0), Fault.HUGE_REPLY).receive(b'{"execute":"guest-info"}')
    assert isinstance(out[0], Stream)
    assert sum(len(chunk) for chunk in out[0].chunks) > 100_000_000
    big = agent_for(make_profile(0), Fault.OVERSIZE).receive(b'{"execute":"guest-info"}')
    assert isinstance(big[0], Stream)
    assert sum(len(chunk) for chunk in big[0].chunks) > 16 << 20


def test_disconnect_fault_cuts_the_reply() -> None:
    agent = agent_for(make_profile(0), Fault.DISCONNECT)
    assert replies(agent, SYNC)[-1] == b'\xff{"return": 9}\n'
    out = agent.receive(b'{"execute":"guest-get-osinfo"}')
    assert isinstance(out[0], bytes) and not out[0].endswith(b"\n")
    assert out[1] == Close()


def test_data_faults() -> None:
    out_of_range = agent_for(make_profile(0), Fault.OUT_OF_RANGE)
    fs = replies(out_of_range, b'{"execute":"guest-get-fsinfo"}')[0]
    assert str(2**80).encode() in fs and b'"used-bytes": -5' in fs
    wrong = agent_for(make_profile(0), Fault.WRONG_IDS)
    assert replies(wrong, SYNC)[-1] == b'\xff{"return": 10}\n'
    repeated = agent_for(make_profile(0), Fault.REPEATED_IDS)
    line = replies(repeated, b'{"execute":"guest-ping","id":1}')[0]
    assert line == b'{"return": {}, "id": 1}\n' * 2
    deep = agent_for(make_profile(0), Fault.DEEP_NESTING)
    assert b"[" * 100_000 in replies(deep, b'{"execute":"guest-get-users"}')[0]
    bad_utf8 = agent_for(make_profile(0), Fault.INVALID_UTF8)
    raw = replies(bad_utf8, b'{"execute":"guest-get-host-name"}')[0]
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    sync_only = agent_for(make_profile(0), Fault.SYNC_ONLY)
    assert replies(sync_only, SYNC) == [b'\xff{"return": 9}\n']
    assert replies(sync_only, b'{"execute":"guest-ping"}') == []


def test_markup_fault_puts_markup_and_escapes_in_every_text_field() -> None:
    clock = FakeClock()
    agent = agent_for(make_profile(0), Fault.MARKUP, clock=clock)
    for command in (
        "guest-get-host-name",
        "guest-get-osinfo",
        "guest-network-get-interfaces",
        "guest-get-users",
        "guest-get-fsinfo",
        "guest-get-timezone",
    ):
        text = replies(agent, json.dumps({"execute": command}).encode())[0].decode()
        value = json.loads(text)["return"]
        assert "[bold red]" in text and "\\u001B]0;" in text and "\\r" in text, command
        assert "\\u0000" in text, command
        assert value
    listing = run_exec(agent, clock, "/bin/sh", ["-c", LISTING, "qgadash-ls", "/data"])
    names = base64.b64decode(str(listing["out-data"])).decode()
    assert "[link=" in names and "\x1b[31m" in names and "\x00" in names
    handle = call(agent, "guest-file-open", {"path": "/etc/motd"})["return"]
    motd = call(agent, "guest-file-read", {"handle": handle})["return"]
    assert b"[bold red]" in base64.b64decode(motd["buf-b64"])


# --- profiles and fleets --------------------------------------------------------------


def test_make_profile_is_deterministic_and_varied() -> None:
    assert make_profile(5, seed=1) == make_profile(5, seed=1)
    ids = {make_profile(i).os.id for i in range(30)}
    assert {"debian", "ubuntu", "rocky", "alpine", "fedora", "mswindows"} <= ids
    win = windows_profile()
    assert win.windows is True
    assert "guest-exec" in win.disabled_commands


def test_demo_fleet_has_the_promised_guests() -> None:
    fleet = demo_fleet(24)
    assert fleet == demo_fleet(24)
    faults = [fault for _, _, fault in fleet]
    assert faults.count(Fault.SILENT) == 1 and faults.count(Fault.FROZEN) == 1
    assert faults.count(Fault.SLOW) == 1
    assert sum(1 for _, p, _ in fleet if p.windows) == 1
    assert len({name for name, _, _ in fleet}) == 24
    assert len(demo_fleet(1)) == 1


def test_fault_names_and_assignment() -> None:
    assert str(Fault.INVALID_UTF8) == "invalid-utf8"
    assert Fault.parse("invalid_utf8") is Fault.INVALID_UTF8
    with pytest.raises(ValueError, match="unknown fault"):
        Fault.parse("nope")
    faults = assign_faults(100, {Fault.SILENT: 3, Fault.GARBAGE: 2})
    assert faults == assign_faults(100, {Fault.GARBAGE: 2, Fault.SILENT: 3})
    assert faults.count(Fault.SILENT) == 3 and faults.count(Fault.GARBAGE) == 2
    sliced = fleet_slice(100, 0, {Fault.SILENT: 3}, range(0, 50)) + fleet_slice(
        100, 0, {Fault.SILENT: 3}, range(50, 100)
    )
    assert [vm.fault for vm in sliced] == assign_faults(100, {Fault.SILENT: 3})


def test_hosts_toml(tmp_path: object) -> None:
    import tomllib
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = write_hosts_toml(
        tmp_path / "hosts.toml", tmp_path / "socks", "sim", poll_interval=2.0, timeout=1.5
    )
    data = tomllib.loads(path.read_text())
    assert data["settings"] == {"poll_interval": 2.0, "timeout": 1.5}
    (hv,) = data["hypervisor"]
    assert hv["name"] == "sim" and hv["session"] == "held"
    assert hv["agents"] == [str((tmp_path / "socks").resolve() / "*.sock")]


def test_hostile_text_carries_every_trap() -> None:
    text = hostile_text("x")
    for trap in ("[bold red]", "[link=", "\x1b[31m", "\x1b]0;", "\r", "\x00"):
        assert trap in text
