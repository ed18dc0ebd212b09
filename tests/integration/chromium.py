"""A real headless Chromium (Debian's `chromium`, never a downloaded build) driven over
the Chrome DevTools protocol, for tests of pages qgadash serves.

The browser runs in its own session and user-data directory with a DevTools port on
127.0.0.1 (it writes the port to `DevToolsActivePort`); it is stopped by process group
at teardown. A page is driven through its own DevTools websocket (aiohttp's client):
navigate, evaluate JavaScript, type keys as real key events.

textual-serve draws the terminal with xterm.js on a canvas, so the screen is not in the
DOM. `TERMINAL_HOOK`, run before the page's scripts, keeps the xterm.js Terminal object
the page creates (it is stored as `.terminal` on textual's session object) and the
screen is read from its buffer: the text the operator would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.realagent import missing_peer

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
TERMINAL_HOOK = """
(() => {
  Object.defineProperty(Object.prototype, "terminal", {
    configurable: true,
    get() { return undefined; },
    set(value) {
      Object.defineProperty(this, "terminal", {
        value, writable: true, configurable: true, enumerable: true,
      });
      if (value && value.buffer && !window.__qgadashTerminal) {
        window.__qgadashTerminal = value;
      }
    },
  });
})();
"""
SCREEN = """
(() => {
  const t = window.__qgadashTerminal;
  if (!t) return null;
  const b = t.buffer.active, out = [];
  for (let i = 0; i < t.rows; i++) {
    const line = b.getLine(b.viewportY + i);
    out.push(line ? line.translateToString(true) : "");
  }
  return out.join("\\n");
})()
"""
CURSOR_LINE = """
(() => {
  const t = window.__qgadashTerminal;
  if (!t) return "";
  const b = t.buffer.active, line = b.getLine(b.viewportY + b.cursorY);
  return line ? line.translateToString(true) : "";
})()
"""
KEYS = {"Enter": ("\r", 13), "Escape": ("\x1b", 27), "Tab": ("\t", 9)}


def require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        missing_peer(CHROMIUM, "chromium")


@dataclass
class Chromium:
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    port: int = 0

    @property
    def log(self) -> Path:
        return self.directory / "chromium.log"

    def start(self) -> None:
        profile = self.directory / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    CHROMIUM,
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        active = profile / "DevToolsActivePort"
        give_up = time.monotonic() + 60
        while not (active.exists() and active.read_text().count("\n") >= 1):
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise AssertionError(f"chromium did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.port = int(active.read_text().split("\n")[0])

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    async def new_page(self) -> Page:
        """A fresh tab with the terminal hook installed."""
        new_tab = f"http://127.0.0.1:{self.port}/json/new?about:blank"
        async with aiohttp.ClientSession() as http, http.put(new_tab) as response:
            target = await response.json()
        page = Page(target["webSocketDebuggerUrl"], target["id"], self.port)
        await page.connect()
        await page.call("Page.enable")
        await page.call("Page.addScriptToEvaluateOnNewDocument", source=TERMINAL_HOOK)
        return page


class Page:
    """One tab, over its own DevTools websocket."""

    def __init__(self, websocket_url: str, target_id: str, port: int) -> None:
        self.websocket_url = websocket_url
        self.target_id = target_id
        self.port = port
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._http = aiohttp.ClientSession()
        self._socket = await self._http.ws_connect(self.websocket_url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            doc = json.loads(message.data)
            future = self._waiting.pop(doc.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(doc)
            elif "method" in doc:
                self.events.append(doc)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._socket is not None
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self._socket.send_json({"id": number, "method": method, "params": params})
        doc = await asyncio.wait_for(future, 30)
        if "error" in doc:
            raise AssertionError(f"{method}: {doc['error']}")
        result: dict[str, Any] = doc.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def screen(self) -> str:
        """The terminal's visible text ("" before the page made its terminal)."""
        return await self.evaluate(SCREEN) or ""

    async def cursor_line(self) -> str:
        """The line the terminal's cursor is on (Textual puts it in the focused input)."""
        return str(await self.evaluate(CURSOR_LINE))

    async def wait_for(self, condition: Callable[[str], bool], what: str, seconds: float) -> str:
        give_up = time.monotonic() + seconds
        text = await self.screen()
        while not condition(text):
            if time.monotonic() > give_up:
                raise AssertionError(f"{what}: not within {seconds:g} s; the screen:\n{text}")
            await asyncio.sleep(0.2)
            text = await self.screen()
        return text

    async def type(self, text: str) -> None:
        """Printable characters as real key presses into the focused terminal."""
        await self.evaluate("window.__qgadashTerminal && window.__qgadashTerminal.focus()")
        for char in text:
            await self.call("Input.dispatchKeyEvent", type="keyDown", key=char, text=char)
            await self.call("Input.dispatchKeyEvent", type="keyUp", key=char)

    async def press(self, key: str) -> None:
        text, code = KEYS[key]
        await self.call(
            "Input.dispatchKeyEvent",
            type="keyDown",
            key=key,
            code=key,
            text=text,
            windowsVirtualKeyCode=code,
            nativeVirtualKeyCode=code,
        )
        await self.call(
            "Input.dispatchKeyEvent",
            type="keyUp",
            key=key,
            code=key,
            windowsVirtualKeyCode=code,
            nativeVirtualKeyCode=code,
        )

    async def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self.call("Page.close")
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
