"""The engine's own numbers, for the exporter's `/metrics`: polls done, their round trips,
VMs per agent state, and what scrapes cost.

The engine writes every poll's outcome into its store as a new snapshot with a new
`last_poll`; `PollCounter` is given each changed snapshot (by `follow.StoreFollower`)
and counts a poll wherever `last_poll` moved. It never waits for a poll and costs a
dictionary lookup per changed VM. prometheus-client's metrics take their own locks: the
HTTP server's thread reads them while the loop counts.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from qgadash import __version__
from qgadash.fleet.model import AgentState, VmSnapshot

__all__ = ["EngineMetrics", "PollCounter"]

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
            "Time to build one /metrics response from the kept text (in the HTTP server's "
            "thread, off the polling loop).",
            buckets=RENDER_BUCKETS,
            registry=self.registry,
        )
        Info("qgadash_build", "The exporter's version.", registry=self.registry).info(
            {"version": __version__}
        )
        for state in AgentState:
            self.polls.labels(state.value)
            self.vms.labels(state.value).set(0)


class PollCounter:
    """Counts polls and VMs per agent state into `EngineMetrics`, from changed snapshots."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics
        self._last_poll: dict[str, float | None] = {}
        self._states: dict[str, AgentState] = {}
        self._tally: Tally[AgentState] = Tally()
        self._by_state = {state: metrics.polls.labels(state.value) for state in AgentState}
        self._vms_by_state = {state: metrics.vms.labels(state.value) for state in AgentState}

    def changed(self, vm_id: str, snap: VmSnapshot) -> None:
        """A poll wherever `last_poll` moved (the engine writes one per poll's outcome)."""
        if snap.last_poll is not None and self._last_poll.get(vm_id) != snap.last_poll:
            self._by_state[snap.agent].inc()
            if snap.agent is AgentState.OK and snap.latency_ms is not None:
                self._metrics.poll_rtt.observe(snap.latency_ms / 1000)
        self._last_poll[vm_id] = snap.last_poll
        old = self._states.get(vm_id)
        if old is not snap.agent:
            if old is not None:
                self._tally[old] -= 1
            self._tally[snap.agent] += 1
            self._states[vm_id] = snap.agent

    def removed(self, vm_id: str) -> None:
        self._last_poll.pop(vm_id, None)
        old = self._states.pop(vm_id, None)
        if old is not None:
            self._tally[old] -= 1

    def publish(self) -> None:
        """The gauge of VMs per state, as of the changes seen so far."""
        for state, gauge in self._vms_by_state.items():
            gauge.set(self._tally[state])
