"""The files in deploy/ say what the code does: the systemd unit's command parses, the
dashboard and the rules name only metrics the exporter serves."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from qgadash.cli.parser import build_parser
from qgadash.exporter.exposition import HYPERVISOR_FAMILIES, VM_FAMILIES

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
OWN = {
    "qgadash_polls_total",
    "qgadash_poll_duration_seconds",
    "qgadash_vms",
    "qgadash_scrape_render_seconds",
    "qgadash_build_info",
}


def served() -> set[str]:
    names = set(OWN)
    for family in (*VM_FAMILIES, *HYPERVISOR_FAMILIES):
        names.add(family.name + ("_total" if family.kind == "counter" else ""))
    return names


def named_metrics(text: str) -> set[str]:
    found = set(re.findall(r"\bqgadash_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in found}


def test_the_systemd_unit_runs_a_command_qgadash_accepts() -> None:
    unit = (DEPLOY / "systemd" / "qgadash-metrics.service").read_text()
    joined = unit.replace("\\\n", " ")
    (line,) = [ln for ln in joined.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/qgadash")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "metrics" and args.read_only
    assert args.listen.startswith("127.0.0.1:")


def test_the_dashboard_and_the_rules_use_only_served_metrics() -> None:
    dashboard = (DEPLOY / "grafana" / "qgadash-dashboard.json").read_text()
    json.loads(dashboard)
    rules = (DEPLOY / "prometheus" / "qgadash-rules.yml").read_text()
    assert named_metrics(dashboard) <= served(), named_metrics(dashboard) - served()
    assert named_metrics(rules) <= served(), named_metrics(rules) - served()
