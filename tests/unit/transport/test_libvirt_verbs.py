"""libvirt's verb outputs read back as agent replies, and parsed by the agent's parsers.

GUESTINFO is what `virsh guestinfo --user --os --timezone --hostname --filesystem --disk
--interface` printed for a tests/guests TCG guest under libvirt 9.0 (plus a user).
"""

from __future__ import annotations

import base64

import pytest

from qgadash.agent import replies
from qgadash.agent.errors import AgentCommandError, AgentProtocolError
from qgadash.agent.policy import LIBVIRT_VERBS, POLICIES, command_policy, libvirt_verb
from qgadash.transport import libvirt_events as events
from qgadash.transport import libvirt_verbs as verbs
from qgadash.transport.virsh import command_output

GUESTINFO = """\
user.count          : 1
user.0.name         : root
user.0.login-time   : 1795961000123
os.id               : qgadash-guest
os.name             : qgadash test guest
os.pretty-name      : qgadash test guest 1.0
os.version          : 1.0 (busybox)
os.version-id       : 1.0
os.machine          : x86_64
os.kernel-release   : 6.1.0-57-amd64
os.kernel-version   : #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)
timezone.name       : UTC
timezone.offset     : 0
hostname            : lv-probe
fs.count            : 1
fs.0.name           : vda
fs.0.mountpoint     : /data
fs.0.fstype         : ext4
fs.0.total-bytes    : 13237248
fs.0.used-bytes     : 14336
fs.0.disk.count     : 1
fs.0.disk.0.alias   : vda
fs.0.disk.0.device  : /dev/vda
disk.count          : 1
disk.0.name         : /dev/vda
disk.0.partition    : no
disk.0.alias        : vda
if.count            : 2
if.0.name           : lo
if.0.hwaddr         : 00:00:00:00:00:00
if.0.addr.count     : 2
if.0.addr.0.type    : ipv4
if.0.addr.0.addr    : 127.0.0.1
if.0.addr.0.prefix  : 8
if.0.addr.1.type    : ipv6
if.0.addr.1.addr    : ::1
if.0.addr.1.prefix  : 128
if.1.name           : dummy0
if.1.hwaddr         : 12:f6:05:52:a9:82
if.1.addr.count     : 1
if.1.addr.0.type    : ipv4
if.1.addr.0.addr    : 10.0.2.41
if.1.addr.0.prefix  : 24
"""


def reply(name: str, text: str = GUESTINFO) -> object:
    return verbs.guestinfo_reply(name, verbs.parse_typed_params(text))


def test_guestinfo_becomes_the_agents_replies() -> None:
    assert replies.parse_host_name(reply("guest-get-host-name")) == "lv-probe"
    os_info = replies.parse_osinfo(reply("guest-get-osinfo"))
    assert os_info.kernel_release == "6.1.0-57-amd64" and os_info.version_id == "1.0"
    assert replies.parse_timezone(reply("guest-get-timezone")).zone == "UTC"
    (user,) = replies.parse_users(reply("guest-get-users"))
    assert user.name == "root" and user.login_time == pytest.approx(1795961000.123)
    (fs,) = replies.parse_fsinfo(reply("guest-get-fsinfo"))
    assert (fs.mountpoint, fs.type, fs.total_bytes, fs.devices) == (
        "/data",
        "ext4",
        13237248,
        ("/dev/vda",),
    )
    (disk,) = replies.parse_disks(reply("guest-get-disks"))
    assert disk.name == "/dev/vda" and not disk.partition
    lo, dummy = replies.parse_interfaces(reply("guest-network-get-interfaces"))
    assert lo.name == "lo" and [a.address for a in dummy.addresses] == ["10.0.2.41"]
    assert dummy.mac == "12:f6:05:52:a9:82"


def test_what_libvirt_left_out_is_a_command_error() -> None:
    with pytest.raises(AgentCommandError):
        reply("guest-get-host-name", "os.id : x\n")
    with pytest.raises(AgentCommandError):
        reply("guest-get-fsinfo", "hostname : x\n")


def test_a_guests_count_is_not_a_size() -> None:
    """fs.count says 4 billion, one entry exists: one filesystem, at once."""
    text = "fs.count : 4000000000\nfs.0.name : vda\nfs.0.mountpoint : /\nfs.0.fstype : ext4\n"
    assert len(reply("guest-get-fsinfo", text)) == 1  # type: ignore[arg-type]
    with pytest.raises(AgentProtocolError):
        reply("guest-get-users", "user.count : many\n")


def test_freeze_state_from_domtime() -> None:
    assert verbs.freeze_from_domtime(None) == "thawed"
    disabled = AgentCommandError(
        "CommandNotFound",
        "Command guest-get-time has been disabled: the agent is in frozen state",
        "guest-get-time",
    )
    assert verbs.freeze_from_domtime(disabled) == "frozen"
    missing = AgentCommandError("CommandNotFound", "Command guest-get-time has not been found")
    with pytest.raises(AgentCommandError, match="freeze state unknown"):
        verbs.freeze_from_domtime(missing)


def test_counts_times_and_arguments() -> None:
    assert verbs.fs_count("Froze 2 filesystem(s)\n", "domfsfreeze") == 2
    assert verbs.fs_count("\nThawed 1 filesystem(s)\n\n", "domfsthaw") == 1
    with pytest.raises(AgentProtocolError):
        verbs.fs_count("", "domfsfreeze")
    assert verbs.domtime_seconds("Time: 1795961591") == 1795961591
    assert verbs.freeze_arguments("guest-fsfreeze-freeze-list", {"mountpoints": ["/", "/d"]}) == [
        "--mountpoint",
        "/",
        "--mountpoint",
        "/d",
    ]
    assert verbs.set_time_arguments(None) == ["--sync"]
    assert verbs.set_time_arguments({"time": 1_795_961_591_999_999_999}) == ["--time", "1795961591"]
    secret = base64.b64encode("s3cret é".encode()).decode()
    assert verbs.password_arguments({"username": "ops", "password": secret, "crypted": True}) == [
        "--user",
        "ops",
        "--password",
        "s3cret é",
        "--encrypted",
    ]
    with pytest.raises(AgentCommandError):
        verbs.password_arguments({"username": "ops", "password": "not base64!"})


def test_guestinfo_flags_from_help() -> None:
    help_text = "  SYNOPSIS\n    guestinfo <domain> [--user] [--os] [--hostname] [--filesystem]\n"
    assert verbs.guestinfo_flags(help_text) == {"--user", "--os", "--hostname", "--filesystem"}
    assert verbs.guestinfo_flags("error: command 'guestinfo' doesn't exist\n") == frozenset()
    wanted = ["guest-get-host-name", "guest-get-disks", "guest-info"]
    assert verbs.guestinfo_groups(wanted, frozenset({"--hostname"})) == ["--hostname"]


def test_output_glued_to_the_marker_line_is_kept() -> None:
    """virsh -q prints domtime's `Time: N` without a newline, before the next prompt."""
    segment = b"virsh # domtime --domain 'x'\nTime: 1795961591virsh # echo Q'G'A-END-ab-3\n"
    assert command_output(segment) == b"Time: 1795961591"


def test_the_policy_table_names_the_verbs() -> None:
    assert libvirt_verb("guest-fsfreeze-freeze") == "domfsfreeze"
    assert libvirt_verb("guest-info") is None and libvirt_verb("guest-exec") is None
    assert libvirt_verb("no-such-command") is None
    assert set(LIBVIRT_VERBS) <= set(POLICIES)
    assert command_policy("guest-set-user-password").secret  # the field left the rest alone


def test_lifecycle_events_and_list_states() -> None:
    assert events.parse_event("event 'lifecycle' for domain 'lv-web': Suspended Paused") == (
        "lv-web",
        "paused",
    )
    assert events.parse_event("event 'lifecycle' for domain 'a': b': Stopped Destroyed") == (
        "a': b",
        "shut off",
    )
    assert events.parse_event("event 'lifecycle' for domain 'x': Defined Added") is None
    assert events.parse_event("garbage") is None
    table = (
        " Id   Name        State\n-----\n 1    lv-web      running\n -    old vm      shut off\n"
    )
    assert events.parse_list_all(table) == {"lv-web": "running", "old vm": "shut off"}
