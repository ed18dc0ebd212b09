"""The command line: the dashboard, and headless subcommands for scripts.

`status` and every other subcommand run on the fleet engine alone; Textual is imported
only when the dashboard starts, so scripts stay light. The package: `parser` (grammar),
`lifecycle` (one process: settle, run, stop and thaw, exit status), `select` (what
subcommands share), and a module per group of verbs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgadash.cli.actions import cmd_agent, cmd_exec, cmd_fstrim, cmd_shutdown, cmd_suspend
from qgadash.cli.admin import (
    admin_writes,
    cmd_password,
    cmd_ssh_keys,
    cmd_time_sync,
    cmd_vcpus,
)
from qgadash.cli.copy import cmd_cp
from qgadash.cli.freeze import cmd_freeze, cmd_thaw
from qgadash.cli.lifecycle import Command, run_command
from qgadash.cli.logs import configure_logging
from qgadash.cli.metrics import cmd_metrics, shard_config
from qgadash.cli.parser import build_parser, demo_default
from qgadash.cli.select import EXIT_FAILED, EXIT_USAGE, SelectionUnreachable, UsageError
from qgadash.cli.serve import cmd_serve
from qgadash.cli.status import cmd_status
from qgadash.fleet.actions import ReadOnlyError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Config, ConfigError, find_config, load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import HoldJournal
from qgadash.fleet.tuning import settle_garbage_collector

if TYPE_CHECKING:
    from qgadash.ui.preferences import DisplaySettings

__all__ = ["COMMANDS", "build_parser", "main", "run"]

log = logging.getLogger(__name__)

DESTRUCTIVE = {"freeze", "thaw", "shutdown", "suspend", "exec", "fstrim"}
# (`agent` is judged per command by qgadash.agent.policy; `cp` by its direction.)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(demo_default(sys.argv[1:] if argv is None else argv))
    if args.debug and not args.log_file:
        print("qgadash: --debug needs --log-file PATH", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_file, args.debug)
    # The subcommand only: its arguments may hold secrets (exec's argv, agent's JSON).
    log.debug("qgadash %s started (pid %d)", args.command or "dashboard", os.getpid())
    try:
        return asyncio.run(run(args)) if args.command else run_dashboard_command(args)
    except ConfigError as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ReadOnlyError) as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SelectionUnreachable as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM, after the engine stopped and thawed
        return 128 + signal.SIGTERM


def load(args: argparse.Namespace) -> Config:
    config = load_config(find_config(args.hosts))
    if args.read_only:
        config = Config(
            config.path, _settings(config, read_only=True), config.hypervisors, config.vms
        )
    if args.theme:
        config = Config(
            config.path, _settings(config, theme=args.theme), config.hypervisors, config.vms
        )
    return config


def _settings(config: Config, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(config.settings, **changes)


def run_dashboard_command(args: argparse.Namespace) -> int:
    display = _display_settings(args)  # before Textual is imported: it sets the colours
    if args.demo is not None:
        return asyncio.run(_demo_dashboard(args, display))
    if args.prometheus is not None:
        return _estate_dashboard(args, display)
    config = load(args)
    from qgadash.ui.app import run_dashboard

    audit = AuditLog(keep_argv=args.audit_argv)
    engine = FleetEngine(
        config, audit=audit, journal=HoldJournal(), after_discovery=settle_garbage_collector
    )
    return run_dashboard(engine, theme=args.theme, config_label=str(config.path), display=display)


def _display_settings(args: argparse.Namespace) -> DisplaySettings:
    """dashboard.json's display settings, --low-bandwidth and --colors over them."""
    import dataclasses

    from qgadash.ui.preferences import apply_colors, load_display

    display = load_display()
    if getattr(args, "low_bandwidth", False):
        display = dataclasses.replace(display, low_bandwidth=True)
    if getattr(args, "colors", None):
        display = dataclasses.replace(display, colors=args.colors)
    apply_colors(display.colors)
    return display


def _estate_dashboard(args: argparse.Namespace, display: DisplaySettings) -> int:
    """The estate as Prometheus has it: read-only, no hosts.toml needed."""
    from qgadash.exporter.estate import EstateEngine
    from qgadash.ui.app import run_dashboard

    try:
        engine = EstateEngine(args.prometheus)
    except ValueError as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    label = f"estate · {args.prometheus} · read-only"
    return run_dashboard(engine, theme=args.theme, config_label=label, display=display)


async def _demo_dashboard(args: argparse.Namespace, display: DisplaySettings) -> int:
    from qgadash.ui.app import QgadashApp, run_app

    async with contextlib.AsyncExitStack() as stack:
        config = await _demo_config(args, stack)
        label = f"demo · {_demo_count(args)} simulated VMs"
        engine = FleetEngine(config, after_discovery=settle_garbage_collector)
        app = QgadashApp(engine, config_label=label, theme=args.theme, display=display)
        return await run_app(app)


def _demo_count(args: argparse.Namespace) -> int:
    requested: int = args.demo
    return max(1, min(requested, 5000))


async def _demo_config(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Config:
    from qgadash.sim.fleet import SimFleet

    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qgadash-demo-"))
    fleet = SimFleet.demo(Path(tmp), _demo_count(args))
    await fleet.start()
    stack.push_async_callback(fleet.stop)
    hosts = Path(tmp) / "hosts.toml"
    fleet.write_hosts_toml(hosts, hypervisor="demo")
    args.hosts = str(hosts)
    return load(args)


async def run(args: argparse.Namespace) -> int:
    writes = (
        args.command in DESTRUCTIVE
        or admin_writes(args)
        or (args.command == "cp" and ":" in args.destination)
    )
    return await run_command(args, COMMANDS[args.command], _config_for, writes)


async def _config_for(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Config:
    config = await _demo_config(args, stack) if args.demo is not None else load(args)
    return shard_config(config, args.shard) if getattr(args, "shard", None) else config


COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "freeze": cmd_freeze,
    "thaw": cmd_thaw,
    "fstrim": cmd_fstrim,
    "shutdown": cmd_shutdown,
    "suspend": cmd_suspend,
    "exec": cmd_exec,
    "time-sync": cmd_time_sync,
    "password": cmd_password,
    "ssh-keys": cmd_ssh_keys,
    "vcpus": cmd_vcpus,
    "cp": cmd_cp,
    "agent": cmd_agent,
    "metrics": cmd_metrics,
    "serve": cmd_serve,
}
