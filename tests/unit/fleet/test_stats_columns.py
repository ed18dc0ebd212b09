"""The fleet columns' CPU % and disk rates: polled only when asked (PollPlan.with_stats),
each poll's counters turned into a rate against the last poll's by the live stats'
own arithmetic, and the optional columns fitted only when on."""

from __future__ import annotations

from qgadash.agent.replies import CpuStat, DiskStat
from qgadash.fleet.live_stats import next_cpu, next_disks
from qgadash.fleet.polling import FAST_COMMANDS, PollPlan
from qgadash.ui.fleet_view import fit_widths


def test_the_counters_are_asked_only_while_a_column_wants_them() -> None:
    plan = PollPlan()
    assert plan.with_stats(cpu=False, disks=False) == plan
    both = plan.with_stats(cpu=True, disks=True)
    assert both.fast == (*FAST_COMMANDS, "guest-get-cpustats", "guest-get-diskstats")
    assert both.commands(None, slow=False)[-2:] == ["guest-get-cpustats", "guest-get-diskstats"]
    assert both.with_stats(cpu=False, disks=True).fast == (*FAST_COMMANDS, "guest-get-diskstats")
    assert both.with_stats(cpu=False, disks=False) == plan
    assert both.with_stats(cpu=True, disks=True) == both  # never asked twice


def test_cpu_percent_and_disk_rate_from_two_polls() -> None:
    first = next_cpu(None, [CpuStat(0, {"user": 100, "idle": 900})], at=10.0)
    assert first.cpu_percent is None  # one sample: no rate yet
    second = next_cpu(first, [CpuStat(0, {"user": 130, "idle": 970})], at=11.0)
    assert second.cpu_percent == 30.0
    reboot = next_cpu(second, [CpuStat(0, {"user": 1, "idle": 2})], at=12.0)
    assert reboot.cpu_percent is None  # counters went back: no rate, not a negative one

    a = next_disks(
        None, [DiskStat("vda", None, None, {"read-sectors": 0, "write-sectors": 0})], at=0.0
    )
    assert a.disk_bps is None
    b = next_disks(
        a, [DiskStat("vda", None, None, {"read-sectors": 8, "write-sectors": 2})], at=2.0
    )
    assert b.disk_bps == (8 + 2) * 512 / 2


def test_optional_columns_are_fitted_only_when_on() -> None:
    off = fit_widths(300, 1)
    assert "cpu" not in off and "io" not in off
    on = fit_widths(300, 1, optional={"cpu", "io"})
    assert {"cpu", "io"} <= set(on)
    assert sum(off.values()) + 2 * len(off) == sum(on.values()) + 2 * len(on) == 300
    narrow = fit_widths(100, 1, optional={"cpu"})
    assert "cpu" not in narrow and "hv" not in narrow  # dropped first when the room is short
