"""A real Prometheus (Debian's `prometheus`) on 127.0.0.1 for integration tests.

Each server has its own directory (config, rule files, TSDB storage, log) and a free
port, scrapes its targets every second and evaluates rules every second; stopped by
pid at teardown. Queries go through the HTTP API, as Grafana's would.

    server = PrometheusServer(tmp, targets=["127.0.0.1:9633"], rule_files=[rules])
    server.start(); server.query('qgadash_fsfreeze_frozen == 1'); server.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.processes import free_port
from tests.integration.realagent import missing_peer

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
T = TypeVar("T")


def require_prometheus() -> None:
    """Fail (CI=true) or skip (elsewhere) without Debian's prometheus package."""
    for binary in (PROMETHEUS, PROMTOOL):
        if not os.access(binary, os.X_OK):
            missing_peer(binary, "prometheus")


@dataclass
class PrometheusServer:
    directory: Path
    targets: Sequence[str]
    rule_files: Sequence[Path] = ()
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        rules = []
        for i, source in enumerate(self.rule_files):
            copy = self.directory / f"rules-{i}.yml"
            shutil.copyfile(source, copy)
            rules.append(str(copy))
        # JSON is YAML: no YAML library needed to write the config.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [
                {
                    "job_name": "qgadash",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": list(self.targets)}],
                }
            ],
        }
        (self.directory / "prometheus.yml").write_text(json.dumps(config, indent=2))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        self.wait(lambda: self._ready(), "Prometheus ready", 60)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            doc = json.loads(response.read())
        if doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: {doc}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant vector: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def labels_of(self, promql: str, label: str) -> set[str]:
        return {sample["metric"].get(label, "") for sample in self.query(promql)}

    @staticmethod
    def wait(probe: Callable[[], T], what: str, seconds: float) -> T:
        """`probe()` until it is truthy; its last value in the failure message."""
        give_up = time.monotonic() + seconds
        last: T = probe()
        while not last:
            if time.monotonic() > give_up:
                raise AssertionError(f"{what}: not within {seconds:g} s (last: {last!r})")
            time.sleep(0.25)
            with contextlib.suppress(OSError):
                last = probe()
        return last
