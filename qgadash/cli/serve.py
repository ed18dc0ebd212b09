"""`serve`: the dashboard in a browser, through textual-serve's app service.

The page can freeze production, so it opens only for whoever has the URL this start
printed: as Jupyter does, every start makes a random token; the page (`/?token=T`) and
its websocket (`/ws/T`) answer 403 without it, and a websocket from another origin is
refused too. The bind address is loopback unless the operator says `--allow-remote`.

Each browser session is a separate process: textual-serve runs the command we give it
with Textual's web driver, so a session is a normal `qgadash --hosts FILE` dashboard
with all its freeze safety (quit thaws, stop signals thaw, keepers and journal). Closing
the tab makes that dashboard quit, which thaws. A stop signal to serve is passed on to
every session's dashboard (Ctrl-C reaches them anyway, as members of the same process
group), which thaws as it would on that signal in a terminal: at once, retried, and on
record as the signal ("thaw (signal SIGTERM)"), not as the operator's quit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import html
import ipaddress
import logging
import secrets
import shlex
import signal
import socket
import sys
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import textual_serve
from aiohttp import WSMsgType, hdrs, web
from textual_serve.app_service import AppService
from textual_serve.download_manager import DownloadManager

from qgadash.cli.select import EXIT_FAILED, EXIT_OK, UsageError
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.signals import received_stop_signal, say

log = logging.getLogger(__name__)

STATIC = Path(textual_serve.__file__).resolve().parent / "static"
STOP_BUDGET = 60.0  # seconds the sessions' dashboards get to quit (and thaw) on stop
FORBIDDEN = (
    "403 Forbidden: this page needs the URL `qgadash serve` printed when it started "
    "(it carries a token that changes with every start).\n"
)
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="/static/css/xterm.css">
<script src="/static/js/textual.js"></script>
<style>
  html, body {{ margin: 0; height: 100%; background: #0c181f; }}
  .textual-terminal {{ position: absolute; inset: 0; }}
  .notice {{ display: none; position: absolute; inset: 0; z-index: 10;
    align-items: center; justify-content: center; background: rgba(12, 24, 31, 0.92);
    color: #eee; font: 16px monospace; text-align: center; white-space: pre-line; }}
  body.-closed .notice {{ display: flex; }}
  button {{ margin-top: 16px; padding: 8px 24px; font: inherit; }}
</style>
</head>
<body>
<div class="notice"><div>Session ended.
(qgadash serve allows {sessions} browser session(s) at once: a second one is refused.)
<br><button type="button" onclick="window.location.reload()">Start again</button></div></div>
<div id="terminal" class="textual-terminal" data-session-websocket-url="{websocket}"
  data-font-size="{font_size}"></div>
</body>
</html>
"""
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
}


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the page on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_command(engine: FleetEngine, args: argparse.Namespace) -> str:
    """The shell command each browser session runs: this qgadash's dashboard, on the
    same hosts.toml and options (`exec`: the session's process is the dashboard)."""
    if engine.config.path is None:
        raise UsageError("serve needs a hosts.toml (--hosts FILE)")
    argv = [sys.executable, "-m", "qgadash", "--hosts", str(Path(engine.config.path).resolve())]
    if engine.config.settings.read_only:
        argv.append("--read-only")
    if args.theme:
        argv += ["--theme", args.theme]
    if args.log_file:
        argv += ["--log-file", str(Path(args.log_file).resolve())]
    if args.debug:
        argv.append("--debug")
    if args.audit_argv:
        argv.append("--audit-argv")
    return "exec " + shlex.join(argv)


class SessionService(AppService):
    """textual-serve's app service, remembering its process to learn its exit status."""

    process: Process | None = None

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        self.process = await super()._open_app_process(width, height)
        return self.process


class DashboardServer:
    """The token-guarded web server; `start`, then `stop` (which ends every session)."""

    def __init__(
        self, command: str, host: str, port: int, max_sessions: int = 1, title: str = "qgadash"
    ) -> None:
        self.command = command
        self.host = host
        self.port = port
        self.max_sessions = max_sessions
        self.title = title
        self.token = secrets.token_urlsafe(32)
        self.failed_sessions = 0  # dashboards that exited non-zero (a thaw not proven)
        self._open: set[web.WebSocketResponse] = set()  # sessions counted against the limit
        self._services: set[SessionService] = set()  # every dashboard still running
        self._runner: web.AppRunner | None = None
        self._downloads = DownloadManager()

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/?token={self.token}"

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/ws", self._forbidden),
                web.get("/ws/{token}", self._websocket),
                web.static("/static", STATIC),
            ]
        )
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=STOP_BUDGET
        )
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

    async def stop(self, sig: signal.Signals | None = None) -> None:
        """Close every browser session; each dashboard quits (and thaws) before this returns.

        `sig`, the stop signal ending serve, is sent to each session's dashboard first,
        and they are given `STOP_BUDGET` to end by it before their tabs are closed (the
        tab's "quit" would otherwise race the signal for the reason of the thaw)."""
        if sig is not None:
            signalled = []
            for service in list(self._services):
                process = service.process
                if process is not None and process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(sig)
                        signalled.append(process.wait())
            if signalled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*signalled), STOP_BUDGET)
        for websocket in list(self._open):
            await websocket.close(code=1001, message=b"qgadash serve is stopping")
        if self._runner is not None:
            await self._runner.cleanup()  # waits for the session handlers, then the rest
            self._runner = None

    # -- the guard -------------------------------------------------------------------------

    def _token_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(
            offered.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """A browser names the page that opens a websocket: it must be ours (no other
        site's page may drive a session, even one that learnt the token)."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True  # not a browser: the token is the whole check
        return origin in (f"http://{request.host}", f"https://{request.host}")

    async def _forbidden(self, request: web.Request) -> web.Response:
        raise web.HTTPForbidden(text=FORBIDDEN)

    # -- handlers ------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        if not self._token_ok(request.query.get("token")):
            raise web.HTTPForbidden(text=FORBIDDEN, headers=SECURITY_HEADERS)
        try:
            font_size = max(6, min(int(request.query.get("fontsize", "16")), 48))
        except ValueError:
            font_size = 16
        websocket = f"ws://{request.host}/ws/{self.token}"
        body = PAGE.format(
            title=html.escape(self.title),
            websocket=html.escape(websocket, quote=True),
            font_size=font_size,
            sessions=self.max_sessions,
        )
        return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._token_ok(request.match_info.get("token")) or not self._same_origin(request):
            raise web.HTTPForbidden(text=FORBIDDEN)
        if len(self._open) >= self.max_sessions:
            raise web.HTTPConflict(
                text=f"409 Conflict: qgadash serve allows {self.max_sessions} browser "
                "session(s) at once (--max-sessions N for more)\n"
            )
        websocket = web.WebSocketResponse(heartbeat=15)
        self._open.add(websocket)  # before any await: the limit holds under a race
        service: SessionService | None = None
        try:
            await websocket.prepare(request)
            service = SessionService(
                self.command,
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=_closer(websocket),
                download_manager=self._downloads,
            )
            self._services.add(service)
            width = _size(request.query.get("width"), 80)
            height = _size(request.query.get("height"), 24)
            log.info("browser session from %s: starting a dashboard", request.remote)
            await service.start(width, height)
            await _relay(websocket, service)
        finally:
            # The tab is gone: a new one may start while this dashboard quits and thaws.
            self._open.discard(websocket)
            if service is not None:
                await service.stop()
                self._services.discard(service)
                code = service.process.returncode if service.process else None
                if code not in (0, None):
                    self.failed_sessions += 1
                    say(f"qgadash serve: a session's dashboard exited with status {code}")
        return websocket


def _closer(websocket: web.WebSocketResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await websocket.close()

    return close


def _size(text: str | None, default: int) -> int:
    try:
        return max(10, min(int(text or default), 1000))
    except ValueError:
        return default


async def _relay(websocket: web.WebSocketResponse, service: AppService) -> None:
    """The browser's messages to the session (textual-serve's protocol)."""
    async for message in websocket:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            envelope: Any = message.json()
            kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        if kind == "stdin" and isinstance(data, str):
            await service.send_bytes(data.encode("utf-8"))
        elif kind == "resize" and isinstance(data, dict):
            await service.set_terminal_size(
                _size(str(data.get("width")), 80), _size(str(data.get("height")), 24)
            )
        elif kind == "ping":
            await websocket.send_json(["pong", data])
        elif kind == "blur":
            await service.blur()
        elif kind == "focus":
            await service.focus()


async def cmd_serve(engine: FleetEngine, args: argparse.Namespace) -> int:
    """Serve until a stop signal cancels this; every session's dashboard quits first."""
    if not is_loopback(args.host) and not args.allow_remote:
        raise UsageError(
            f"--host {args.host} is not loopback: anyone who reaches it with the URL could "
            "act on the fleet. Add --allow-remote to mean it, or keep 127.0.0.1 and use an "
            "SSH tunnel (ssh -L 8000:127.0.0.1:8000 HOST)"
        )
    if args.max_sessions < 1:
        raise UsageError("--max-sessions must be at least 1")
    read_only = engine.config.settings.read_only
    server = DashboardServer(
        session_command(engine, args),
        args.host,
        args.port,
        args.max_sessions,
        title=f"qgadash · {Path(engine.config.path or '').name}"
        + (" · read-only" if read_only else ""),
    )
    try:
        await server.start()
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        if not is_loopback(args.host):
            say(
                f"qgadash serve: WARNING: listening on {args.host}, not loopback, over plain "
                "HTTP: anyone who has the URL below can "
                + (
                    "see the whole fleet"
                    if read_only
                    else "freeze, thaw, shut down and run commands in every guest of this fleet"
                )
                + ". Keep the URL secret; stop serve when done."
            )
        print(f"qgadash serve: open {server.url}", flush=True)
        say(
            f"qgadash serve: {args.max_sessions} browser session(s) at a time"
            + (", read-only" if read_only else "")
            + "; Ctrl-C stops (each session thaws first)"
        )
        await asyncio.Event().wait()  # until a signal cancels this task
    finally:
        await server.stop(received_stop_signal())
    return EXIT_FAILED if server.failed_sessions else EXIT_OK
