"""A real Prometheus scraping `qgadash metrics` over a simulated fleet: PromQL answers
which guests are frozen and whose agent is down, and the shipped alert rules and
Grafana queries work on what the exporter serves.

One fleet (12 VMs: 3 frozen, 1 silent), one exporter and one Prometheus for the module.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import REPO, Process, SimProcess, free_port, qgadash
from tests.integration.prometheus import PROMTOOL, PrometheusServer, require_prometheus

RULES = REPO / "deploy" / "prometheus" / "qgadash-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "qgadash-dashboard.json"
SETTLE = 45.0  # seconds for scrapes to show a state (1 s polls, 1 s timeout, 1 s scrapes)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_prometheus()
    with SimProcess(
        tmp_path_factory.mktemp("fleet"), count=12, faults={"frozen": 3, "silent": 1}
    ) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def exporter(sim: SimProcess) -> Iterator[tuple[Process, int]]:
    port = free_port()
    process = Process(
        qgadash("--hosts", str(sim.hosts), "metrics", "--listen", f"127.0.0.1:{port}")
    )
    with process:
        process.wait_for("serving metrics", 60)
        yield process, port


@pytest.fixture(scope="module")
def prometheus(
    exporter: tuple[Process, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"),
        targets=[f"127.0.0.1:{exporter[1]}"],
        rule_files=[RULES],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_promql_for_frozen_guests_returns_exactly_the_frozen_ones(
    sim: SimProcess, prometheus: PrometheusServer
) -> None:
    frozen = sim.vm_ids("frozen")
    assert len(frozen) == 3
    found = prometheus.wait(
        lambda: (
            prometheus.labels_of("qgadash_fsfreeze_frozen == 1", "vm") == frozen
            and prometheus.labels_of("qgadash_fsfreeze_frozen", "vm")
            == sim.vm_ids() - sim.vm_ids("silent")
        ),
        "the frozen guests in PromQL",
        SETTLE,
    )
    assert found
    assert prometheus.labels_of("qgadash_fsfreeze_frozen == 1", "vm") == frozen


def test_the_silent_agent_is_down_and_every_other_up(
    sim: SimProcess, prometheus: PrometheusServer
) -> None:
    silent = sim.vm_ids("silent")
    prometheus.wait(
        lambda: prometheus.labels_of("qgadash_agent_up == 0", "vm") == silent,
        "the silent agent down",
        SETTLE,
    )
    assert prometheus.labels_of("qgadash_agent_up == 1", "vm") == sim.vm_ids() - silent
    (vm,) = silent
    state = prometheus.query(f'qgadash_agent_state{{vm="{vm}"}}')
    assert [s["metric"]["state"] for s in state] == ["timeout"]


def test_facts_and_engine_counters_reach_prometheus(
    sim: SimProcess, prometheus: PrometheusServer
) -> None:
    healthy = sim.vm_ids() - sim.vm_ids("silent")
    reported = prometheus.wait(
        lambda: prometheus.labels_of("qgadash_filesystem_size_bytes", "vm"),
        "filesystems of the answering guests",
        SETTLE,
    )
    assert reported <= healthy and len(reported) >= len(healthy) // 2  # some report no sizes
    prometheus.wait(
        lambda: prometheus.query("rate(qgadash_network_receive_bytes_total[5s]) > 0"),
        "NIC counters that grow",
        SETTLE,
    )
    assert prometheus.labels_of("qgadash_guest_info", "vm") >= healthy
    assert prometheus.labels_of("qgadash_hypervisor_up == 1", "hypervisor") == {"sim"}
    polls = prometheus.query('qgadash_polls_total{result="ok"}')
    assert polls and float(polls[0]["value"][1]) > 0
    assert prometheus.query("qgadash_poll_duration_seconds_count > 0")
    assert prometheus.labels_of('qgadash_polls_total{result="timeout"} > 0', "result") == {
        "timeout"
    }


def test_the_shipped_alert_rules_fire_for_the_frozen_and_the_silent(
    sim: SimProcess, prometheus: PrometheusServer
) -> None:
    subprocess.run([PROMTOOL, "check", "rules", str(RULES)], check=True, capture_output=True)

    def pending() -> dict[str, set[str]]:
        alerts = prometheus.api("alerts")["alerts"]
        found: dict[str, set[str]] = {}
        for alert in alerts:
            found.setdefault(alert["labels"]["alertname"], set()).add(alert["labels"].get("vm"))
        return found

    expected = {
        "QgadashGuestFrozen": sim.vm_ids("frozen"),
        "QgadashAgentDown": sim.vm_ids("silent"),
    }

    def all_pending() -> dict[str, set[str]]:
        """The pending alerts once every expected one is there (nothing until then)."""
        found = pending()
        return found if all(found.get(k) == v for k, v in expected.items()) else {}

    alerts = prometheus.wait(
        all_pending,
        "frozen and agent-down alerts (pending: their `for` is minutes)",
        SETTLE,
    )
    assert "QgadashHypervisorDown" not in alerts
    assert "QgadashExporterDown" not in alerts


def test_every_query_of_the_grafana_dashboard_runs(prometheus: PrometheusServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(expressions) >= 8
    prometheus.wait(lambda: prometheus.query("qgadash_agent_up"), "the exporter scraped", SETTLE)
    for expr in expressions:
        promql = expr.replace("$hypervisor", ".*").replace("$__rate_interval", "1m")
        prometheus.query(promql)  # fails the test on a PromQL error
    variable_queries = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert any("qgadash_agent_up" in str(q) for q in variable_queries)


def test_a_scrape_is_openmetrics_when_asked_and_gzip_when_accepted(
    exporter: tuple[Process, int],
) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{exporter[1]}/metrics",
        headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(response.read()).decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE qgadash_network_receive_bytes counter" in text


def test_the_exporter_stops_on_sigterm(sim: SimProcess, tmp_path: Path) -> None:
    port = free_port()
    process = Process(
        qgadash("--hosts", str(sim.hosts), "metrics", "--listen", f"127.0.0.1:{port}")
    )
    with process:
        process.wait_for("serving metrics", 60)
        assert process.stop() == 128 + 15


async def test_the_estate_view_shows_every_vm_prometheus_has_read_only(
    sim: SimProcess, prometheus: PrometheusServer
) -> None:
    """`qgadash --prometheus URL`: every VM the exporters report, its agent state and
    freeze, in the dashboard; nothing can be sent to a guest from there."""
    from qgadash.exporter.estate import EstateEngine
    from qgadash.fleet.actions import ReadOnlyError
    from qgadash.fleet.model import AgentState, FreezeState
    from qgadash.ui.app import QgadashApp
    from tests.ui.screen import screen_text, wait_until

    silent, frozen = sim.vm_ids("silent"), sim.vm_ids("frozen")
    prometheus.wait(
        lambda: (
            prometheus.labels_of("qgadash_fsfreeze_frozen == 1", "vm") == frozen
            and prometheus.labels_of("qgadash_agent_up == 0", "vm") == silent
        ),
        "the fleet's states in Prometheus",
        SETTLE,
    )
    engine = EstateEngine(prometheus.url, interval=1.0)
    await engine.refresh()
    snaps = {s.id: s for s in engine.store.snapshots()}
    assert set(snaps) == sim.vm_ids()
    assert {i for i, s in snaps.items() if s.freeze is FreezeState.FROZEN} == frozen
    assert {i for i, s in snaps.items() if s.agent is not AgentState.OK} == silent
    # (frozen guests refuse guest-get-host-name: only the others have one)
    assert {i for i, s in snaps.items() if s.facts.hostname} == sim.vm_ids() - silent - frozen
    with pytest.raises(ReadOnlyError):
        await engine.freeze(sorted(frozen))

    app = QgadashApp(EstateEngine(prometheus.url, interval=1.0), config_label="estate")
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: len(app.fleet.table.order) == len(sim.vm_ids()))
        text = screen_text(app)
        assert "READ-ONLY" in text or "read-only" in text
        assert f"❄ {len(frozen)} frozen" in text
        await pilot.press("f")  # freeze: refused, nothing sent
        await pilot.pause()
        assert not app.engine.frozen_by_us()
