"""A Prometheus exporter over the fleet engine: `qgadash metrics`.

One process polls the fleet (the same engine as the dashboard) and serves `/metrics`:
`follow` (the store's changes, on the event loop: each changed VM's lines re-rendered),
`server` (HTTP in a thread of its own: a scrape joins the kept lines, never waiting for
the loop), `exposition` (the per-VM families as exposition text, labels sanitised,
cardinality capped), `polls` (the engine's own counters and durations). Imports the
fleet and agent layers, never the UI.
"""

from qgadash.exporter.exposition import MAX_FILESYSTEMS, MAX_INTERFACES, FleetExposition
from qgadash.exporter.server import DEFAULT_LISTEN, MetricsServer, parse_listen

__all__ = [
    "DEFAULT_LISTEN",
    "MAX_FILESYSTEMS",
    "MAX_INTERFACES",
    "FleetExposition",
    "MetricsServer",
    "parse_listen",
]
