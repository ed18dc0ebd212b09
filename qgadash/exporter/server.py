"""`/metrics` over HTTP, from a thread of its own: a scrape needs no turn of the event loop.

The loop polls and, as each VM's snapshot is replaced, re-renders that VM's lines
(`follow.StoreFollower`); a scrape, in the HTTP server's thread, only joins the kept
lines, encodes them and compresses them. So a scrape is answered while the loop is
busy, or even blocked, with the fleet as of the last change the loop took in; it never
waits for a poll. (Rendering the whole fleet in a worker thread at scrape time was
tried first: with the loop busy polling, both waited on each other for the
interpreter's lock. Joining kept lines is a few C calls, and zlib lets go of the lock
while it compresses.) Scrapes of one format that arrive during a build share it; gzip,
which Prometheus asks for, is level 1: at 10,000 VMs the text is ~14 MB and compresses
~10x at a fraction of zlib's default cost.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

from qgadash.exporter.exposition import FleetExposition
from qgadash.exporter.follow import StoreFollower
from qgadash.exporter.polls import EngineMetrics, PollCounter
from qgadash.fleet.store import FleetStore

__all__ = ["DEFAULT_LISTEN", "MetricsServer", "parse_listen"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9633"
MAX_CONNECTIONS = 32  # open at once (a thread each); more are closed at once
IDLE_TIMEOUT = 60.0  # seconds a kept-alive connection may sit idle (Prometheus: 15 s)
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


class _Build:
    """One body being built; scrapes that arrive meanwhile wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: bytes | None = None


class ScrapeBodies:
    """Response bodies built from the kept text; safe from any thread.

    A scrape that arrives while a body of its format is being built takes that body; a
    scrape of a fleet unchanged since the last build takes the last body.
    """

    def __init__(self, exposition: FleetExposition, metrics: EngineMetrics) -> None:
        self._exposition = exposition
        self._metrics = metrics
        self._guard = threading.Lock()
        self._building: dict[tuple[bool, bool], _Build] = {}
        self._built: dict[tuple[bool, bool], tuple[int, bytes]] = {}

    def body(self, openmetrics: bool, compress: bool) -> bytes:
        key = (openmetrics, compress)
        with self._guard:
            generation = self._exposition.generation
            built = self._built.get(key)
            if built is not None and built[0] == generation:
                return built[1]
            build = self._building.get(key)
            mine = build is None
            if build is None:
                build = self._building[key] = _Build()
        if not mine:
            build.done.wait()
            if build.body is None:
                raise RuntimeError("the scrape this one waited for failed")
            return build.body
        try:
            build.body = self._build(openmetrics, compress)
            with self._guard:
                self._built[key] = (generation, build.body)
            return build.body
        finally:
            with self._guard:
                del self._building[key]
            build.done.set()

    def _build(self, openmetrics: bool, compress: bool) -> bytes:
        started = time.perf_counter()
        fleet = self._exposition.text(openmetrics).encode()
        if openmetrics:
            own: bytes = openmetrics_format.generate_latest(  # type: ignore[no-untyped-call]
                self._metrics.registry
            )
            body = b"".join((fleet, own.removesuffix(b"# EOF\n"), b"# EOF\n"))
        else:
            body = fleet + text_format.generate_latest(self._metrics.registry)
        del fleet
        if compress:
            body = gzip_fast(body)
        self._metrics.render.observe(time.perf_counter() - started)
        return body


def gzip_fast(data: bytes) -> bytes:
    """gzip at level 1 (zlib lets go of the interpreter's lock while it works)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


class _Handler(BaseHTTPRequestHandler):
    """GET / and GET /metrics; writes bytes, nothing else."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus scrapes
    timeout = IDLE_TIMEOUT
    server: _HttpServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            accept = ",".join(self.headers.get_all("Accept") or [])
            openmetrics = "application/openmetrics-text" in accept
            compress = "gzip" in (self.headers.get("Accept-Encoding") or "")
            body = self.server.bodies.body(openmetrics, compress)
            self._send(body, OPENMETRICS_TYPE if openmetrics else TEXT_TYPE, compress)
        elif path == "/":
            self._send(INDEX, "text/html; charset=utf-8", False)
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str, gzipped: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _HttpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A thread per connection, at most `MAX_CONNECTIONS` of them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, bodies: ScrapeBodies) -> None:
        family, *_rest, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        self.bodies = bodies
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((str(address[0]), int(address[1])), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("/metrics: answering %s failed", client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """Serves the fleet in `store` at /metrics; `start`, then `stop`."""

    def __init__(self, store: FleetStore, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.metrics = EngineMetrics()
        self.exposition = FleetExposition()
        self.follower = StoreFollower(store, self.exposition, PollCounter(self.metrics))
        self.bodies = ScrapeBodies(self.exposition, self.metrics)
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        """Listen (port 0: any free one, then `port` says which); OSError if it cannot."""
        httpd = await asyncio.to_thread(_HttpServer, self.host, self.port, self.bodies)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self.follower.start()
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="qgadash-metrics-http", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self.follower.stop()
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            if thread is not None:
                await asyncio.to_thread(httpd.shutdown)  # the accept loop ends
            httpd.server_close()
