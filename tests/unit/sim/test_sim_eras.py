"""Simulated agents of every era, and the simulated Windows guest's powershell.exe.

What each era answers is taken from QEMU's sources of the time: the schema's `Since:`
tags, qmp_dispatch_check_obj() (ids refused before 2.12), the qerror texts of 1.x/2.x.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from qgadash.sim.agent import GuestAgent
from qgadash.sim.profiles import Era, era_profile

WALL = 1_764_000_000.0
NOW = [100.0]  # the agents' monotonic clock, moved on by run_exec


def agent(era: Era, **changes: Any) -> GuestAgent:
    profile = era_profile(era, 3)
    if changes:
        profile = dataclasses.replace(profile, **changes)
    return GuestAgent(profile, clock=lambda: NOW[0], wall=lambda: WALL)


def ask(guest: GuestAgent, data: bytes) -> list[Any]:
    out = []
    for item in guest.receive(data):
        if isinstance(item, bytes):
            for line in item.split(b"\n"):
                if line:
                    out.append(json.loads(line.lstrip(b"\xff")))
    return out


def call(guest: GuestAgent, name: str, args: dict[str, Any] | None = None, rid: Any = None) -> Any:
    request: dict[str, Any] = {"execute": name}
    if args is not None:
        request["arguments"] = args
    if rid is not None:
        request["id"] = rid
    (reply,) = ask(guest, json.dumps(request).encode())
    return reply


def commands(guest: GuestAgent) -> set[str]:
    info = call(guest, "guest-info")["return"]
    return {c["name"] for c in info.get("supported_commands", [])}


# -- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("era", [Era.QGA_1_2, Era.QGA_2_5])
def test_agents_before_2_12_refuse_a_request_id_without_echoing_it(era: Era) -> None:
    reply = call(agent(era), "guest-ping", rid=5)
    assert reply == {
        "error": {"class": "GenericError", "desc": "QMP input object member 'id' is unexpected"}
    }
    assert call(agent(era), "guest-ping") == {"return": {}}


def test_qemu_ga_1_0_refuses_it_with_its_qerror_class() -> None:
    reply = call(agent(Era.QGA_1_0), "guest-ping", rid=5)
    assert reply["error"]["class"] == "QMPExtraInputObjectMember"


def test_qemu_ga_2_12_takes_an_id_and_does_not_echo_it() -> None:
    guest = agent(Era.QGA_7_2, agent_version="2.12.0")
    assert call(guest, "guest-ping", rid=5) == {"return": {}}


@pytest.mark.parametrize("era", [Era.QGA_7_2, Era.QGA_10, Era.WINDOWS])
def test_agents_since_3_0_echo_ids_in_replies_and_errors(era: Era) -> None:
    guest = agent(era)
    assert call(guest, "guest-ping", rid=5) == {"return": {}, "id": 5}
    assert call(guest, "guest-nope", rid=6)["id"] == 6


# -- what each era has ----------------------------------------------------------------


def test_qemu_ga_1_0_has_no_sync_delimited_and_lists_no_commands() -> None:
    guest = agent(Era.QGA_1_0)
    assert call(guest, "guest-info") == {"return": {"version": "1.0"}}
    assert call(guest, "guest-sync-delimited", {"id": 1})["error"] == {
        "class": "CommandNotFound",
        "desc": "The command guest-sync-delimited has not been found",
    }
    assert call(guest, "guest-sync", {"id": 9}) == {"return": 9}
    # A stray byte is "Invalid JSON syntax", with 1.0's class.
    assert ask(guest, b"\xff")[0]["error"] == {
        "class": "JSONParsing",
        "desc": "Invalid JSON syntax",
    }
    for absent in ("guest-network-get-interfaces", "guest-fstrim", "guest-suspend-ram"):
        assert call(guest, absent)["error"]["class"] == "CommandNotFound"


def test_qemu_ga_1_2_the_seeds_schema() -> None:
    guest = agent(Era.QGA_1_2)
    info = call(guest, "guest-info")["return"]
    assert info["version"] == "1.2.0"
    assert all(set(c) == {"name", "enabled"} for c in info["supported_commands"])  # no success-
    assert commands(guest) == {
        "guest-sync",
        "guest-sync-delimited",
        "guest-ping",
        "guest-info",
        "guest-shutdown",
        "guest-file-open",
        "guest-file-close",
        "guest-file-read",
        "guest-file-write",
        "guest-file-seek",
        "guest-file-flush",
        "guest-fsfreeze-status",
        "guest-fsfreeze-freeze",
        "guest-fsfreeze-thaw",
        "guest-fstrim",
        "guest-suspend-disk",
        "guest-suspend-ram",
        "guest-suspend-hybrid",
        "guest-network-get-interfaces",
    }
    nics = call(guest, "guest-network-get-interfaces")["return"]
    assert nics and all("statistics" not in nic for nic in nics)  # statistics: 2.11
    assert call(guest, "guest-fstrim")["return"] == {}  # per-path results: 2.4
    assert ask(guest, b"\xff")[0]["error"] == {
        "class": "GenericError",
        "desc": "Invalid JSON syntax",
    }


def test_qemu_ga_2_5_has_exec_and_fsinfo_without_usage() -> None:
    guest = agent(Era.QGA_2_5, disabled_commands=frozenset({"guest-file-open"}))
    have = commands(guest)
    assert {"guest-exec", "guest-fsfreeze-freeze-list", "guest-get-fsinfo"} <= have
    assert not have & {"guest-get-osinfo", "guest-get-host-name", "guest-get-disks"}
    assert all(
        "success-response" in c for c in call(guest, "guest-info")["return"]["supported_commands"]
    )
    fs = call(guest, "guest-get-fsinfo")["return"]
    assert fs and all("used-bytes" not in f and "total-bytes" not in f for f in fs)
    assert all("dev" not in d and "serial" not in d for f in fs for d in f["disk"])
    assert call(guest, "guest-file-open", {"path": "/etc/motd"})["error"] == {
        "class": "GenericError",
        "desc": "The command guest-file-open has been disabled for this instance",
    }
    assert "paths" in call(guest, "guest-fstrim")["return"]


def test_before_2_6_guest_file_seek_takes_only_a_number() -> None:
    guest = agent(Era.QGA_2_5)
    handle = call(guest, "guest-file-open", {"path": "/etc/motd"})["return"]
    refused = call(guest, "guest-file-seek", {"handle": handle, "offset": 0, "whence": "end"})
    assert refused["error"]["desc"] == "Invalid parameter type for 'whence', expected: integer"
    assert call(guest, "guest-file-seek", {"handle": handle, "offset": 0, "whence": 2})["return"]


def test_the_10_x_agent_has_load_and_routes() -> None:
    guest = agent(Era.QGA_10)
    assert {"guest-get-load", "guest-network-get-route"} <= commands(guest)
    assert set(call(guest, "guest-get-load")["return"]) == {"load1m", "load5m", "load15m"}
    assert call(guest, "guest-network-get-route")["return"]
    assert "guest-get-load" not in commands(agent(Era.QGA_7_2))


def test_the_windows_agent_refuses_exec_by_policy_and_vss_holds_a_freeze_10_s() -> None:
    clock = [100.0]
    guest = GuestAgent(era_profile(Era.WINDOWS, 3), clock=lambda: clock[0], wall=lambda: WALL)
    refused = call(guest, "guest-exec", {"path": "cmd.exe"})["error"]
    assert refused == {
        "class": "CommandNotFound",
        "desc": "Command guest-exec has been disabled: the command is not allowed",
    }
    assert call(guest, "guest-fsfreeze-freeze")["return"] == 2
    clock[0] += 10.5
    assert "limited up to 10 seconds" in call(guest, "guest-fsfreeze-thaw")["error"]["desc"]
    assert call(guest, "guest-fsfreeze-status")["return"] == "thawed"


# -- powershell.exe ---------------------------------------------------------------------

OLD_SCRIPT = (
    "Get-ChildItem -Force -LiteralPath $args[0] | Select-Object -First 5000 | "
    "ForEach-Object { $m = if ($_.PSIsContainer) { '41ed' } else { '81a4' }; "
    "$s = if ($_.PSIsContainer) { 0 } else { $_.Length }; "
    "'{0} {1} {2} {3}' -f $m, $s, ([DateTimeOffset]$_.LastWriteTimeUtc).ToUnixTimeSeconds(), "
    "$_.Name }"
)
NEW_SCRIPT = (
    "$ErrorActionPreference = 'Stop'; "
    "[Console]::OutputEncoding = [Text.Encoding]::UTF8; "
    "$p = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('PATH_B64')); "
    "$n = 0; "
    "foreach ($i in Get-ChildItem -Force -LiteralPath $p) { "
    "$n++; if ($n -gt 5000) { [Console]::Error.Write('... more'); exit 3 }; "
    "$m = if ($i.PSIsContainer) { '41ed' } else { '81a4' }; "
    "$s = if ($i.PSIsContainer) { 0 } else { $i.Length }; "
    "$t = ([DateTimeOffset]$i.LastWriteTimeUtc).ToUnixTimeSeconds(); "
    "[Console]::Out.Write(('{0} {1} {2} {3}' -f $m, $s, $t, $i.Name) + [char]0) }"
)


def windows_with_exec() -> GuestAgent:
    return agent(Era.WINDOWS, disabled_commands=frozenset())


def run_exec(guest: GuestAgent, argv: list[str], stdin: bytes | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"path": "powershell.exe", "arg": argv, "capture-output": True}
    if stdin is not None:
        args["input-data"] = base64.b64encode(stdin).decode()
    pid = call(guest, "guest-exec", args)["return"]["pid"]
    NOW[0] += 5  # the program has run
    status: dict[str, Any] = call(guest, "guest-exec-status", {"pid": pid})["return"]
    assert status["exited"] is True
    status["stdout"] = base64.b64decode(status.get("out-data", ""))
    status["stderr"] = base64.b64decode(status.get("err-data", ""))
    return status


def encoded(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


def records(out: bytes) -> list[str]:
    return [r.decode() for r in out.split(b"\0") if r]


def test_a_path_after_the_command_text_is_script_text_and_args_stays_empty() -> None:
    """The product's first Windows listing: `-Command <script> <path>` never lists."""
    guest = windows_with_exec()
    status = run_exec(guest, ["-NoProfile", "-Command", OLD_SCRIPT, "C:\\Users"])
    assert status["stdout"] == b""
    assert b"Cannot bind argument to parameter 'LiteralPath' because it is null" in status["stderr"]


def test_a_directory_name_after_the_command_text_runs_as_code() -> None:
    guest = windows_with_exec()
    run_exec(guest, ["-NoProfile", "-Command", OLD_SCRIPT, "x;New-Item C:\\pwned.txt"])
    listing = run_exec(guest, ["-NoProfile", "-EncodedCommand", encoded(listing_of("C:\\"))])
    assert any(r.endswith(" pwned.txt") for r in records(listing["stdout"]))


def listing_of(path: str) -> str:
    return NEW_SCRIPT.replace("PATH_B64", base64.b64encode(path.encode()).decode())


def test_the_listing_in_encoded_command_lists_with_nul_ended_records() -> None:
    guest = windows_with_exec()
    status = run_exec(
        guest, ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded(listing_of("C:\\"))]
    )
    assert status["exitcode"] == 0, status
    names = {r.split(" ", 3)[3]: r.split(" ", 3)[0] for r in records(status["stdout"])}
    assert names["Windows"] == "41ed" and names["Users"] == "41ed"
    assert status["stdout"].endswith(b"\0")


def test_the_listing_script_on_stdin_and_the_path_on_stdin() -> None:
    guest = windows_with_exec()
    by_stdin = run_exec(guest, ["-NoProfile", "-Command", "-"], listing_of("D:\\").encode())
    assert [r.split(" ", 3)[3] for r in records(by_stdin["stdout"])] == ["README.txt"]
    reads_path = NEW_SCRIPT.replace(
        "[Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('PATH_B64'))",
        "[Console]::In.ReadToEnd()",
    )
    path_on_stdin = run_exec(
        guest, ["-NoProfile", "-EncodedCommand", encoded(reads_path)], b"D:\\\r\n"
    )
    assert [r.split(" ", 3)[3] for r in records(path_on_stdin["stdout"])] == ["README.txt"]


def test_a_missing_directory_stops_the_listing_with_exit_1() -> None:
    guest = windows_with_exec()
    status = run_exec(guest, ["-NoProfile", "-EncodedCommand", encoded(listing_of("C:\\nope"))])
    assert status["exitcode"] == 1 and b"does not exist" in status["stderr"]


def test_linux_listing_records_end_with_nul_when_the_script_prints_them() -> None:
    guest = agent(Era.QGA_7_2)
    script = '... printf \'%s %s\\000\' "$m" "$f"; done'
    pid = call(
        guest,
        "guest-exec",
        {"path": "/bin/sh", "arg": ["-c", script, "qgadash-ls", "/data"], "capture-output": True},
    )["return"]["pid"]
    NOW[0] += 5
    out = base64.b64decode(call(guest, "guest-exec-status", {"pid": pid})["return"]["out-data"])
    assert out.endswith(b"\0") and b"\n" not in out
