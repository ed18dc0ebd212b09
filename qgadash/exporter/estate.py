"""The estate view: every VM that every shard's exporter reports, read back from Prometheus.

`qgadash --prometheus URL` opens the dashboard on an `EstateEngine`: read-only, nothing is
polled and nothing is sent to a guest; every `interval` seconds a few instant PromQL
queries (`/api/v1/query`) refill the store with each VM's agent state, freeze, round
trip, last answer and what it says it is. Actions stay with each shard's own qgadash and
hosts.toml: this view is where an operator finds which shard to open.

Prometheus is trusted no more than a guest: its label values are guest text relayed
(sanitised for display like any guest string), replies are capped at `MAX_REPLY_BYTES`,
VMs at `MAX_VMS`, and a sample that does not fit is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qgadash.agent.replies import AgentInfo, FreezeState, OsInfo
from qgadash.fleet.config import Config, Settings
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.model import (
    ActionResult,
    AgentState,
    GuestFacts,
    HypervisorState,
    HypervisorStatus,
    VmRef,
    VmSnapshot,
)

__all__ = ["EstateEngine", "PrometheusEstate", "read_estate"]

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 64 * 1024 * 1024
MAX_VMS = 200_000
MAX_LABEL = 256
ADDRESS = "prometheus"  # what the estate's VmRefs carry instead of an agent address

# One instant query per kind of fact; each sample's labels name its VM.
QUERIES = {
    "state": "qgadash_agent_state == 1",
    "frozen": "qgadash_fsfreeze_frozen",
    "rtt": "qgadash_agent_rtt_seconds",
    "seen": "qgadash_agent_last_seen_timestamp_seconds",
    "info": "qgadash_guest_info",
    "hypervisor": "qgadash_hypervisor_up",
}
_STATES = {state.value: state for state in AgentState}


@dataclass
class _Vm:
    hypervisor: str
    state: AgentState = AgentState.PENDING
    freeze: FreezeState = FreezeState.UNKNOWN
    rtt_ms: float | None = None
    seen: float | None = None
    os: str | None = None
    hostname: str | None = None
    agent_version: str | None = None


@dataclass
class Estate:
    """What one round of queries found."""

    vms: dict[str, _Vm] = field(default_factory=dict)
    hypervisors: dict[str, bool] = field(default_factory=dict)
    skipped: int = 0


def _label(metric: dict[str, Any], name: str) -> str | None:
    value = metric.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_LABEL:
        return None
    return value


def _number(sample: dict[str, Any]) -> float | None:
    value = sample.get("value")
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str):
        return None
    try:
        number = float(value[1])
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_estate(results: dict[str, list[Any]]) -> Estate:
    """The estate from each query's `result` vector (untrusted: bad samples skipped)."""
    estate = Estate()
    for kind, samples in results.items():
        for sample in samples:
            if not isinstance(sample, dict) or not isinstance(sample.get("metric"), dict):
                estate.skipped += 1
                continue
            metric = sample["metric"]
            number = _number(sample)
            hypervisor = _label(metric, "hypervisor")
            if kind == "hypervisor":
                if hypervisor is None or number is None:
                    estate.skipped += 1
                else:
                    estate.hypervisors[hypervisor] = number == 1
                continue
            vm_id = _label(metric, "vm")
            if vm_id is None or hypervisor is None or number is None:
                estate.skipped += 1
                continue
            vm = estate.vms.get(vm_id)
            if vm is None:
                if len(estate.vms) >= MAX_VMS:
                    estate.skipped += 1
                    continue
                vm = estate.vms[vm_id] = _Vm(hypervisor)
            if kind == "state":
                vm.state = _STATES.get(metric.get("state", ""), AgentState.ERROR)
            elif kind == "frozen":
                vm.freeze = FreezeState.FROZEN if number == 1 else FreezeState.THAWED
            elif kind == "rtt":
                vm.rtt_ms = number * 1000
            elif kind == "seen":
                vm.seen = number
            elif kind == "info":
                vm.os = _label(metric, "os")
                vm.hostname = _label(metric, "hostname")
                vm.agent_version = _label(metric, "agent_version")
    return estate


def _snapshot(vm_id: str, vm: _Vm, now: float) -> VmSnapshot:
    prefix = f"{vm.hypervisor}/"
    name = vm_id[len(prefix) :] if vm_id.startswith(prefix) else vm_id
    os_info = None
    if vm.os is not None:
        os_info = OsInfo(None, vm.os, vm.os, None, None, None, None, None, None)
    # The version only: which commands it offers is the shard's to know.
    info = AgentInfo(vm.agent_version, ()) if vm.agent_version is not None else None
    return VmSnapshot(
        ref=VmRef(vm.hypervisor, name, ADDRESS, ("estate",)),
        agent=vm.state,
        latency_ms=vm.rtt_ms,
        last_poll=now,
        last_seen=vm.seen,
        facts=GuestFacts(info=info, os=os_info, hostname=vm.hostname),
        freeze=vm.freeze,
    )


class PrometheusEstate:
    """Fills a store from a Prometheus server's view of every qgadash exporter."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"--prometheus needs an http(s) URL, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.error: str | None = None

    def _query(self, promql: str) -> list[Any]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=self.timeout) as reply:
            body = reply.read(MAX_REPLY_BYTES + 1)
        if len(body) > MAX_REPLY_BYTES:
            raise ValueError(f"Prometheus answered over {MAX_REPLY_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict) or document.get("status") != "success":
            raise ValueError(f"Prometheus refused {promql!r}: {str(document)[:200]}")
        data = document.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise ValueError(f"Prometheus gave no vector for {promql!r}")
        return result

    async def read(self) -> Estate:
        """One round of queries, in a worker thread (urllib blocks)."""

        def work() -> Estate:
            return read_estate({kind: self._query(q) for kind, q in QUERIES.items()})

        return await asyncio.to_thread(work)


class EstateEngine(FleetEngine):
    """A read-only engine whose store is the estate as Prometheus sees it."""

    def __init__(
        self, url: str, *, interval: float = 15.0, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(Config(None, Settings(read_only=True), ()), clock=clock)
        self.estate = PrometheusEstate(url)
        self.interval = interval
        self._follower: asyncio.Task[None] | None = None
        self._now = clock

    async def refresh(self) -> Estate:
        """Read the estate once and make the store match it."""
        estate = await self.estate.read()
        now = self._now()
        for vm_id in set(self.store.ids()) - set(estate.vms):
            self.store.remove(vm_id)
        for vm_id, vm in estate.vms.items():
            self.store.put(_snapshot(vm_id, vm, now))
        for name, up in estate.hypervisors.items():
            state = HypervisorState.CONNECTED if up else HypervisorState.UNREACHABLE
            self.store.set_hypervisor(HypervisorStatus(name, state))
        return estate

    async def start(self) -> None:
        if self._follower is None:
            await self._refresh_once()  # the first view at once, then every interval
            self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _refresh_once(self) -> None:
        try:
            await self.refresh()
            self.estate.error = None
        except Exception as exc:  # Prometheus down or odd: keep the last view
            self.estate.error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("estate from %s: %s", self.estate.url, self.estate.error)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._refresh_once()

    async def stop(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        return await super().stop(reason, budget)
