"""`metrics`: poll the fleet and serve it to Prometheus at /metrics until stopped."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from qgadash.cli.select import UsageError
from qgadash.exporter import MetricsServer, parse_listen
from qgadash.fleet.config import Config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.signals import say


async def cmd_metrics(engine: FleetEngine, args: argparse.Namespace) -> int:
    """Runs until a stop signal cancels it; the lifecycle then stops the engine."""
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    server = MetricsServer(engine.store, host, port)
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
    try:
        await engine.start()
        say(f"qgadash: serving metrics of {len(engine.store)} VMs at {server.url}")
        await asyncio.Event().wait()  # until a signal cancels this task
    finally:
        await server.stop()
    return 0


def shard_config(config: Config, tags: Sequence[str]) -> Config:
    """The slice of `config` one exporter of a sharded estate polls: hypervisors with any
    of `tags`, and [[vm]] entries with one or on such a hypervisor (docs/scale.md)."""
    wanted = set(tags)
    hypervisors = tuple(hv for hv in config.hypervisors if wanted & set(hv.tags))
    names = {hv.name for hv in hypervisors}
    vms = tuple(vm for vm in config.vms if wanted & set(vm.tags) or vm.hypervisor in names)
    if not hypervisors and not vms:
        raise UsageError(f"--shard {' '.join(tags)}: no hypervisor or [[vm]] has such a tag")
    return Config(config.path, config.settings, hypervisors, vms)
