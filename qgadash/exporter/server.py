"""`/metrics` over HTTP, in the engine's own event loop.

A scrape takes the store as it is (immutable snapshots: no poll is waited for) and
renders it in slices of `RENDER_SLICE` seconds, handing the loop back between slices, so
polls go on during a scrape and wait at most one slice for it. (A worker thread was
tried first: with the loop busy polling, the interpreter's lock made both wait on each
other, and loop lag rose to over a second during scrapes.) Concurrent scrapes of the
same format share one render; gzip, which Prometheus asks for, is level 1 in 1 MiB
steps: at 10,000 VMs the text is ~14 MB and compresses ~10× at a fraction of zlib's
default cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Sequence

from aiohttp import hdrs, web
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

from qgadash.exporter.exposition import FleetExposition
from qgadash.exporter.polls import EngineMetrics, PollObserver
from qgadash.fleet.model import HypervisorStatus, VmSnapshot
from qgadash.fleet.store import FleetStore

__all__ = ["DEFAULT_LISTEN", "MetricsServer", "parse_listen"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9633"
RENDER_STEP = 100  # VMs rendered between two looks at the clock
RENDER_SLICE = 0.025  # seconds of rendering between two turns of the event loop
GZIP_STEP = 1 << 20  # bytes compressed between two turns
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INDEX = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qgadash exporter</title></head>
<body><h1>qgadash exporter</h1>
<p>The QEMU guest agents of this fleet, for Prometheus: <a href="metrics">/metrics</a>.</p>
</body></html>
"""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces); ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--listen: expected HOST:PORT (e.g. {DEFAULT_LISTEN}), got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen: port {port} is not in 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


class MetricsServer:
    """Serves the fleet in `store` at /metrics; `start`, then `stop`."""

    def __init__(self, store: FleetStore, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.metrics = EngineMetrics()
        self._store = store
        self._observer = PollObserver(store, self.metrics)
        self._exposition = FleetExposition()
        self._render_lock = asyncio.Lock()
        self._pending: dict[tuple[bool, bool], asyncio.Task[bytes]] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        """Listen (port 0: any free one, then `port` says which)."""
        app = web.Application()
        app.add_routes([web.get("/", self._index), web.get("/metrics", self._metrics)])
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:  # port 0 asked: the one bound
            self.port = int(runner.addresses[0][1])
        self._observer.start()

    async def stop(self) -> None:
        self._observer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=INDEX, content_type="text/html", charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        openmetrics = "application/openmetrics-text" in accept
        compress = "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")
        body = await self.scrape(openmetrics, compress)
        headers = {hdrs.CONTENT_TYPE: OPENMETRICS_TYPE if openmetrics else TEXT_TYPE}
        if compress:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=body, headers=headers)

    async def scrape(self, openmetrics: bool, compress: bool = False) -> bytes:
        """One response body; scrapes that arrive while the same one renders share it."""
        key = (openmetrics, compress)
        pending = self._pending.get(key)
        if pending is None:
            self._observer.drain()  # polls counted up to this moment
            snapshots = self._store.snapshots()
            hypervisors = self._store.hypervisors()
            pending = asyncio.ensure_future(
                self._render(snapshots, hypervisors, openmetrics, compress)
            )
            self._pending[key] = pending
            pending.add_done_callback(lambda _t: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _render(
        self,
        snapshots: Sequence[VmSnapshot],
        hypervisors: Sequence[HypervisorStatus],
        openmetrics: bool,
        compress: bool,
    ) -> bytes:
        async with self._render_lock:
            started = time.perf_counter()
            self.metrics.count_states(s.agent for s in snapshots)
            fleet = ""
            slice_end = time.perf_counter() + RENDER_SLICE
            for fleet in self._exposition.steps(snapshots, hypervisors, openmetrics, RENDER_STEP):
                if not fleet and time.perf_counter() > slice_end:
                    await asyncio.sleep(0)
                    slice_end = time.perf_counter() + RENDER_SLICE
            if openmetrics:
                own: bytes = openmetrics_format.generate_latest(  # type: ignore[no-untyped-call]
                    self.metrics.registry
                )
                body = fleet.encode() + own.removesuffix(b"# EOF\n") + b"# EOF\n"
            else:
                body = fleet.encode() + text_format.generate_latest(self.metrics.registry)
            del fleet
            if compress:
                body = await _gzip(body)
            self.metrics.render.observe(time.perf_counter() - started)
            return body


async def _gzip(data: bytes) -> bytes:
    """gzip at level 1, a step at a time."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    view = memoryview(data)
    for offset in range(0, len(data), GZIP_STEP):
        parts.append(compressor.compress(view[offset : offset + GZIP_STEP]))
        await asyncio.sleep(0)
    parts.append(compressor.flush())
    return b"".join(parts)
