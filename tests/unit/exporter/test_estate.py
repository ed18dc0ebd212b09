"""The estate read back from Prometheus: untrusted samples are skipped, never guessed."""

from __future__ import annotations

from typing import Any

import pytest

from qgadash.agent.replies import FreezeState
from qgadash.exporter.estate import MAX_LABEL, PrometheusEstate, read_estate
from qgadash.fleet.model import AgentState


def sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, value]}


def test_each_kind_of_sample_fills_its_fact() -> None:
    vm = {"vm": "pve1/db", "hypervisor": "pve1"}
    estate = read_estate(
        {
            "state": [sample("1", state="timeout", **vm)],
            "frozen": [sample("1", **vm)],
            "rtt": [sample("0.0042", **vm)],
            "info": [sample("1", os="Debian 12", hostname="db-1", agent_version="7.2.0", **vm)],
            "hypervisor": [sample("0", hypervisor="pve1")],
        }
    )
    found = estate.vms["pve1/db"]
    assert found.state is AgentState.TIMEOUT and found.freeze is FreezeState.FROZEN
    assert found.rtt_ms == pytest.approx(4.2)
    assert (found.os, found.hostname, found.agent_version) == ("Debian 12", "db-1", "7.2.0")
    assert estate.hypervisors == {"pve1": False} and estate.skipped == 0


@pytest.mark.parametrize(
    "bad",
    [
        "not a sample",
        {"metric": "x", "value": [0, "1"]},
        sample("1", hypervisor="h"),  # no vm
        sample("1", vm="h/a"),  # no hypervisor
        sample("NaN", vm="h/a", hypervisor="h"),
        sample("+Inf", vm="h/a", hypervisor="h"),
        sample("one", vm="h/a", hypervisor="h"),
        {"metric": {"vm": "h/a", "hypervisor": "h"}, "value": [0, 1]},  # not a string
        sample("1", vm="x" * (MAX_LABEL + 1), hypervisor="h"),
    ],
)
def test_a_sample_that_does_not_fit_is_skipped_and_counted(bad: Any) -> None:
    estate = read_estate({"frozen": [bad, sample("0", vm="h/ok", hypervisor="h")]})
    assert list(estate.vms) == ["h/ok"] and estate.skipped == 1


def test_an_unknown_state_is_an_error_not_ok() -> None:
    estate = read_estate({"state": [sample("1", vm="h/a", hypervisor="h", state="fine")]})
    assert estate.vms["h/a"].state is AgentState.ERROR


@pytest.mark.parametrize("url", ["ftp://x", "file:///etc/passwd", "localhost:9090", ""])
def test_only_an_http_url_is_taken(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        PrometheusEstate(url)
