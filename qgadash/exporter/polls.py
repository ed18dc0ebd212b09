"""The engine's own numbers, for the exporter's `/metrics`: polls done, their round trips,
VMs per agent state, and what scrapes cost.

The engine writes every poll's outcome into its store as a new snapshot with a new
`last_poll`; this observer takes the store's change notifications (nobody else reads
them in the exporter's process) and counts a poll wherever `last_poll` moved. It never
waits for a poll and costs a dictionary lookup per changed VM.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from qgadash import __version__
from qgadash.fleet.model import AgentState
from qgadash.fleet.store import FleetStore

__all__ = ["EngineMetrics", "PollObserver"]

# Round trips of a healthy agent are ~1 ms locally and tens of ms over SSH; a poll that
# times out is counted by its result, not here.
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RENDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EngineMetrics:
    """The exporter's own metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.polls = Counter(
            "qgadash_polls",
            "Polls of VMs' agents by result (ok, timeout, unreachable, error, ...).",
            ["result"],
            registry=self.registry,
        )
        self.poll_rtt = Histogram(
            "qgadash_poll_duration_seconds",
            "Round trip of each answered poll (all of its requests, pipelined).",
            buckets=RTT_BUCKETS,
            registry=self.registry,
        )
        self.vms = Gauge(
            "qgadash_vms",
            "VMs known to the exporter, by the state of their agent.",
            ["state"],
            registry=self.registry,
        )
        self.render = Histogram(
            "qgadash_scrape_render_seconds",
            "Time to render one /metrics response (off the polling loop).",
            buckets=RENDER_BUCKETS,
            registry=self.registry,
        )
        Info("qgadash_build", "The exporter's version.", registry=self.registry).info(
            {"version": __version__}
        )
        for state in AgentState:
            self.polls.labels(state.value)
            self.vms.labels(state.value).set(0)

    def count_states(self, states: Iterable[AgentState]) -> None:
        tally = Tally(states)
        for state in AgentState:
            self.vms.labels(state.value).set(tally.get(state, 0))


class PollObserver:
    """Counts polls from the store's change notifications into `EngineMetrics`."""

    def __init__(self, store: FleetStore, metrics: EngineMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._last_poll: dict[str, float | None] = {}
        self._scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_state = {state: metrics.polls.labels(state.value) for state in AgentState}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.subscribe(self._changed)
        self.drain()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _changed(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Count the polls behind every change since the last drain."""
        self._scheduled = False
        changed, removed, _hypervisors = self._store.take_changes()
        polls = self._by_state
        rtt = self._metrics.poll_rtt
        last = self._last_poll
        for vm_id in removed:
            last.pop(vm_id, None)
        for vm_id in changed:
            snap = self._store.get(vm_id)
            if snap is None:
                continue
            if snap.last_poll is not None and last.get(vm_id) != snap.last_poll:
                polls[snap.agent].inc()
                if snap.agent is AgentState.OK and snap.latency_ms is not None:
                    rtt.observe(snap.latency_ms / 1000)
            last[vm_id] = snap.last_poll
