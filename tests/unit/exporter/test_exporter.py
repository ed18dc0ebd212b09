"""The exporter's text: what each VM becomes, hostile guest text, bounded cardinality."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from qgadash.agent.replies import (
    AgentInfo,
    Filesystem,
    FreezeState,
    Interface,
    InterfaceStats,
    Load,
    OsInfo,
)
from qgadash.exporter import MAX_FILESYSTEMS, MAX_INTERFACES, FleetExposition, parse_listen
from qgadash.exporter import server as server_module
from qgadash.exporter.follow import StoreFollower
from qgadash.exporter.polls import EngineMetrics, PollCounter
from qgadash.fleet.model import AgentState, GuestFacts, HypervisorStatus, VmRef, VmSnapshot
from qgadash.fleet.store import FleetStore
from qgadash.transport.base import HypervisorState

HOSTILE = 'a"b\\c\nd\x1b[31mred\u202eevil\u200b[bold]x[/]'


def stats(rx: int, tx: int) -> InterfaceStats:
    return InterfaceStats(rx, tx, 0, 0, 0, 0, 0, 0)


def filesystem(mountpoint: str, used: int = 10, total: int = 100) -> Filesystem:
    return Filesystem("vda1", mountpoint, "ext4", used, total, ())


def snapshot(
    name: str = "web-01",
    agent: AgentState = AgentState.OK,
    freeze: FreezeState = FreezeState.THAWED,
    **facts: object,
) -> VmSnapshot:
    base = GuestFacts(
        info=AgentInfo("9.2.0", ()),
        os=OsInfo("debian", "Debian GNU/Linux", None, None, "12", None, None, None, None),
        hostname=name,
        interfaces=(Interface("eth0", None, (), stats(100, 200)),),
        filesystems=(filesystem("/"),),
        load=Load(0.5, 0.25, 0.1),
        time_drift_s=0.25,
    )
    return VmSnapshot(
        ref=VmRef("hv1", name, f"/run/{name}.sock"),
        agent=agent,
        latency_ms=1.5 if agent is AgentState.OK else None,
        last_poll=1_800_000_000.0,
        last_seen=1_800_000_000.0,
        facts=dataclasses.replace(base, **facts),  # type: ignore[arg-type]
        freeze=freeze,
    )


def render(*snaps: VmSnapshot, openmetrics: bool = False) -> str:
    hypervisors = [HypervisorStatus("hv1", HypervisorState.LOCAL, vm_count=len(snaps))]
    text = FleetExposition().render(list(snaps), hypervisors, openmetrics)
    return text + "# EOF\n" if openmetrics else text


def samples(text: str, openmetrics: bool = False) -> dict[str, list[tuple[dict[str, str], float]]]:
    parse = parse_openmetrics if openmetrics else parse_text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parse(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_healthy_vm_has_every_family_and_parses(openmetrics: bool) -> None:
    got = samples(render(snapshot(), openmetrics=openmetrics), openmetrics)
    vm = {"vm": "hv1/web-01", "hypervisor": "hv1"}
    assert got["qgadash_agent_up"] == [(vm, 1.0)]
    assert got["qgadash_agent_state"] == [({**vm, "state": "ok"}, 1.0)]
    assert got["qgadash_agent_rtt_seconds"] == [(vm, 0.0015)]
    assert got["qgadash_fsfreeze_frozen"] == [(vm, 0.0)]
    fs = {**vm, "mountpoint": "/", "fstype": "ext4"}
    assert got["qgadash_filesystem_used_bytes"] == [(fs, 10.0)]
    assert got["qgadash_filesystem_size_bytes"] == [(fs, 100.0)]
    nic = {**vm, "interface": "eth0"}
    assert got["qgadash_network_receive_bytes_total"] == [(nic, 100.0)]
    assert got["qgadash_network_transmit_bytes_total"] == [(nic, 200.0)]
    assert got["qgadash_load1"] == [(vm, 0.5)]
    assert got["qgadash_time_drift_seconds"] == [(vm, 0.25)]
    info = {**vm, "os": "Debian GNU/Linux 12", "hostname": "web-01", "agent_version": "9.2.0"}
    assert got["qgadash_guest_info"] == [(info, 1.0)]
    assert got["qgadash_agent_last_seen_timestamp_seconds"] == [(vm, 1_800_000_000.0)]
    assert got["qgadash_hypervisor_up"] == [({"hypervisor": "hv1"}, 1.0)]


def test_a_silent_agent_is_down_keeps_its_freeze_and_drops_stale_facts() -> None:
    got = samples(render(snapshot(agent=AgentState.TIMEOUT, freeze=FreezeState.FROZEN)))
    assert got["qgadash_agent_up"][0][1] == 0.0
    assert got["qgadash_agent_state"][0][0]["state"] == "timeout"
    assert got["qgadash_fsfreeze_frozen"][0][1] == 1.0  # last known: still frozen for all we know
    for stale in ("qgadash_filesystem_used_bytes", "qgadash_load1", "qgadash_agent_rtt_seconds"):
        assert stale not in got


def test_an_unknown_freeze_state_and_an_unpolled_vm_export_no_guess() -> None:
    got = samples(render(snapshot(freeze=FreezeState.UNKNOWN), snapshot("new", AgentState.PENDING)))
    assert [s for s in got.get("qgadash_fsfreeze_frozen", []) if s[0]["vm"] == "hv1/web-01"] == []
    assert [s[0]["vm"] for s in got["qgadash_agent_up"]] == ["hv1/web-01"]  # pending: no 0


@pytest.mark.parametrize("openmetrics", [False, True])
def test_hostile_guest_text_is_escaped_in_every_label(openmetrics: bool) -> None:
    snap = snapshot(
        hostname=HOSTILE,
        filesystems=(filesystem(HOSTILE), filesystem("/" + "x" * 5000)),
        interfaces=(Interface(HOSTILE, None, (), stats(1, 2)),),
        info=AgentInfo(HOSTILE, ()),
    )
    text = render(snap, openmetrics=openmetrics)
    for line in text.splitlines():
        assert line.isprintable(), line  # no raw control, bidi or zero-width character
    got = samples(text, openmetrics)
    hostname = got["qgadash_guest_info"][0][0]["hostname"]
    assert "\\x1b" in hostname and "\\u202e" in hostname and "\\x0a" in hostname
    assert '"' in hostname and "[bold]" in hostname  # quotes escaped in the format, kept here
    mountpoints = [labels["mountpoint"] for labels, _ in got["qgadash_filesystem_used_bytes"]]
    assert len(mountpoints) == 2 and all(len(m) <= 160 for m in mountpoints)


def test_interfaces_and_mountpoints_are_capped_per_vm() -> None:
    snap = snapshot(
        interfaces=tuple(Interface(f"veth{i}", None, (), stats(i, i)) for i in range(500)),
        filesystems=tuple(filesystem(f"/mnt/{i}") for i in range(500)),
    )
    got = samples(render(snap))
    assert len(got["qgadash_network_receive_bytes_total"]) == MAX_INTERFACES
    assert len(got["qgadash_filesystem_size_bytes"]) == MAX_FILESYSTEMS
    assert got["qgadash_filesystem_size_bytes"][0][0]["mountpoint"] == "/mnt/0"  # guest's order


def test_two_mounts_on_one_point_make_one_series() -> None:
    snap = snapshot(filesystems=(filesystem("/", 1), filesystem("/", 2)))
    got = samples(render(snap))  # the parser would refuse duplicate series
    assert got["qgadash_filesystem_used_bytes"] == [
        ({"vm": "hv1/web-01", "hypervisor": "hv1", "mountpoint": "/", "fstype": "ext4"}, 1.0)
    ]


def test_vm_ids_equal_once_cut_make_one_series() -> None:
    a, b = snapshot("x" * 300 + "a"), snapshot("x" * 300 + "b")
    got = samples(render(a, b))
    assert len(got["qgadash_agent_up"]) == 1


def test_a_render_reuses_an_unchanged_vm_and_redraws_a_changed_one() -> None:
    exposition = FleetExposition()
    first, other = snapshot("a"), snapshot("b")
    text1 = exposition.render([first, other], [], False)
    assert exposition.render([first, other], [], False) == text1
    frozen = dataclasses.replace(first, freeze=FreezeState.FROZEN)
    text3 = exposition.render([frozen, other], [], False)
    assert 'qgadash_fsfreeze_frozen{vm="hv1/a",hypervisor="hv1"} 1' in text3
    text4 = exposition.render([other], [], False)  # a VM that left the store leaves the text
    assert "hv1/a" not in text4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9633", ("127.0.0.1", 9633)),
        ("[::1]:9633", ("::1", 9633)),
        (":9633", ("0.0.0.0", 9633)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9633", "host:", "host:port", "host:70000"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--listen"):
        parse_listen(text)


async def test_the_follower_keeps_the_text_in_the_store_order_as_vms_come_and_go() -> None:
    store = FleetStore()
    exposition = FleetExposition()
    follower = StoreFollower(store, exposition, PollCounter(EngineMetrics()))
    store.put(snapshot("vm-0"))
    follower.start()
    for i in range(1, 60):  # found after the start, in one burst: its changes come unordered
        store.put(snapshot(f"vm-{i}"))
    store.remove("hv1/vm-7")
    follower.drain()  # (the loop would, after the puts)
    while follower.behind:
        follower.drain()
    got = [labels["vm"] for labels, _ in samples(exposition.text(False))["qgadash_agent_up"]]
    assert got == [f"hv1/vm-{i}" for i in range(60) if i != 7]
    follower.stop()


def test_scrapes_arriving_during_a_build_share_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP server's threads: one builds, the others wait for that body (the fleet
    changing meanwhile, as it does at 10,000 VMs, does not make each build its own)."""
    building = threading.Event()
    waiting = threading.Event()
    release = threading.Event()
    exposition = FleetExposition()
    exposition.render([snapshot()], [], False)
    builds = []

    class SlowText(FleetExposition):
        def text(self, openmetrics: bool) -> str:
            builds.append(openmetrics)
            building.set()
            release.wait(30)
            self.generation += 1  # the loop took in a change meanwhile
            return exposition.text(openmetrics)

    class WatchedWait(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()
            return super().wait(timeout)

    monkeypatch.setattr(server_module, "_Build", _watched_build(WatchedWait))
    bodies = server_module.ScrapeBodies(SlowText(), EngineMetrics())
    got: list[bytes] = []
    first = threading.Thread(target=lambda: got.append(bodies.body(False, False)))
    first.start()
    assert building.wait(30)
    second = threading.Thread(target=lambda: got.append(bodies.body(False, False)))
    second.start()
    assert waiting.wait(30)  # the second scrape waits for the first one's body
    release.set()
    first.join(30)
    second.join(30)
    assert builds == [False] and len(got) == 2 and got[0] is got[1]
    assert b'qgadash_agent_up{vm="hv1/web-01",hypervisor="hv1"} 1' in got[0]


def _watched_build(event_type: type[threading.Event]) -> type[server_module._Build]:
    class Build(server_module._Build):
        def __init__(self) -> None:
            super().__init__()
            self.done = event_type()

    return Build
