"""The simulator's administration commands answer as the real qemu-ga 7.2 does: the
texts below were read from a real agent (tests/integration/test_admin_real_agent.py
checks the read-only ones against it) and from qga/commands-posix*.c."""

from __future__ import annotations

import base64

from qgadash.sim.agent import GuestAgent
from tests.unit.sim.test_sim_agent import call, linux


def _vcpu_agent(count: int = 4) -> GuestAgent:
    return linux(0, vcpus=count)


def test_set_vcpus_takes_effect_and_get_vcpus_shows_it() -> None:
    agent = _vcpu_agent(4)
    reply = call(agent, "guest-set-vcpus", {"vcpus": [{"logical-id": 3, "online": False}]})
    assert reply == {"return": 1}
    cpus = call(agent, "guest-get-vcpus")["return"]
    assert isinstance(cpus, list)
    online = {c["logical-id"]: c["online"] for c in cpus}
    assert online == {0: True, 1: True, 2: True, 3: False}
    call(agent, "guest-set-vcpus", {"vcpus": [{"logical-id": 3, "online": True}]})
    cpus = call(agent, "guest-get-vcpus")["return"]
    assert isinstance(cpus, list)
    assert all(c["online"] for c in cpus)


def test_cpu0_cannot_be_offlined_and_processing_stops_there() -> None:
    agent = _vcpu_agent(4)
    first = call(agent, "guest-set-vcpus", {"vcpus": [{"logical-id": 0, "online": False}]})
    assert first == {
        "error": {"class": "GenericError", "desc": "logical processor #0 can't be offlined"}
    }
    # After one processed, the error is dropped and the count says how far it got.
    later = call(
        agent,
        "guest-set-vcpus",
        {"vcpus": [{"logical-id": 2, "online": False}, {"logical-id": 0, "online": False}]},
    )
    assert later == {"return": 1}


def test_set_vcpus_unknown_cpu() -> None:
    agent = _vcpu_agent(2)
    reply = call(agent, "guest-set-vcpus", {"vcpus": [{"logical-id": 9, "online": True}]})
    assert reply["error"] == {
        "class": "GenericError",
        "desc": 'open("/sys/devices/system/cpu/cpu9/"): No such file or directory',
    }


def test_ssh_keys_of_a_user_without_the_file_and_an_unknown_user() -> None:
    agent = linux(0)
    missing = call(agent, "guest-ssh-get-authorized-keys", {"username": "root"})
    assert missing["error"] == {
        "class": "GenericError",
        "desc": "failed to read '/root/.ssh/authorized_keys': Failed to open file"
        " \u201c/root/.ssh/authorized_keys\u201d: No such file or directory",
    }
    unknown = call(agent, "guest-ssh-get-authorized-keys", {"username": "nosuchuser"})
    assert unknown["error"] == {
        "class": "GenericError",
        "desc": "failed to lookup user 'nosuchuser': Success",
    }


def test_ssh_keys_add_then_get_then_remove() -> None:
    agent = linux(0)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9 ops@laptop"
    assert call(agent, "guest-ssh-add-authorized-keys", {"username": "root", "keys": [key]}) == {
        "return": {}
    }
    got = call(agent, "guest-ssh-get-authorized-keys", {"username": "root"})
    assert got == {"return": {"keys": [key]}}
    call(agent, "guest-ssh-remove-authorized-keys", {"username": "root", "keys": [key]})
    assert call(agent, "guest-ssh-get-authorized-keys", {"username": "root"}) == {
        "return": {"keys": []}
    }


def test_set_user_password_checks_as_the_real_agent() -> None:
    agent = linux(0)

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    ok = call(
        agent,
        "guest-set-user-password",
        {"username": "root", "password": b64("s3cret"), "crypted": False},
    )
    assert ok == {"return": {}}
    newline = call(
        agent,
        "guest-set-user-password",
        {"username": "root", "password": b64("a\nb"), "crypted": False},
    )
    assert newline["error"]["desc"] == "forbidden characters in raw password"
    colon = call(
        agent,
        "guest-set-user-password",
        {"username": "ro:ot", "password": b64("x"), "crypted": False},
    )
    assert colon["error"]["desc"] == "forbidden characters in username"
    unknown = call(
        agent,
        "guest-set-user-password",
        {"username": "nobody-here", "password": b64("x"), "crypted": False},
    )
    assert unknown["error"]["desc"] == "child process has failed to set user password"


def test_cpustats_in_milliseconds_and_offline_cpus_absent() -> None:
    agent = _vcpu_agent(4)
    call(agent, "guest-set-vcpus", {"vcpus": [{"logical-id": 3, "online": False}]})
    stats = call(agent, "guest-get-cpustats")["return"]
    assert isinstance(stats, list)
    assert [s["cpu"] for s in stats] == [0, 1, 2]
    assert all(s["idle"] >= 1_000_000 for s in stats)  # ms since boot, as qemu-ga says
