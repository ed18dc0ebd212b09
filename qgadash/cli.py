"""The command line: the dashboard, and headless subcommands for scripts.

`status` and every other subcommand run on the fleet engine alone; Textual is imported
only when the dashboard starts, so scripts stay light.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from qgadash import __version__
from qgadash.agent.errors import AgentError
from qgadash.agent.policy import changes_guest, command_policy
from qgadash.fleet.actions import ReadOnlyError
from qgadash.fleet.audit import AuditLog
from qgadash.fleet.config import Config, ConfigError, find_config, load_config
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.holds import HoldJournal
from qgadash.fleet.keeping import Settled
from qgadash.fleet.model import ActionResult, AgentState, VmSnapshot
from qgadash.fleet.report import action_document, status_document
from qgadash.fleet.sanitize import printable
from qgadash.fleet.signals import SignalWatch, say

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DESTRUCTIVE = {"freeze", "thaw", "shutdown", "suspend", "exec", "fstrim"}
# (`agent` is judged per command by qgadash.agent.policy; `cp` by its direction.)


class UsageError(Exception):
    """Wrong use of the command line: exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qgadash",
        description="A terminal dashboard for fleets of VMs, speaking to the QEMU guest agent.",
        epilog="SELECT: [--match GLOB]... [--tag TAG]...  (GLOB against the VM id HYPERVISOR/NAME)",
    )
    parser.add_argument("--version", action="version", version=f"qgadash {__version__}")
    parser.add_argument(
        "--hosts",
        metavar="FILE",
        help="hosts.toml (default ./hosts.toml, then $XDG_CONFIG_HOME/qgadash/hosts.toml)",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="view only: no freeze, thaw, power, exec or writes"
    )
    parser.add_argument(
        "--audit-argv",
        action="store_true",
        help="keep exec command lines and environments in the audit log (masked by default)",
    )
    parser.add_argument(
        "--theme",
        metavar="NAME",
        help="dashboard theme: qgadash-dark, qgadash-light, qgadash-high-contrast, or a user theme",
    )
    parser.add_argument(
        "--demo",
        nargs="?",
        type=int,
        const=24,
        metavar="N",
        help="run on N simulated VMs (default 24)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def selectable(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--match",
            action="append",
            default=[],
            metavar="GLOB",
            help="VM ids to include (several: any of them)",
        )
        p.add_argument(
            "--tag",
            action="append",
            default=[],
            metavar="TAG",
            help="VMs with this tag (several: any of them)",
        )
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")

    def confirmable(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--yes",
            action="store_true",
            help="do not ask for confirmation (required without a terminal)",
        )

    p = sub.add_parser("status", help="poll once; a table or JSON")
    selectable(p)
    p = sub.add_parser("freeze", help="freeze guest filesystems (thawed again after --thaw-after)")
    selectable(p)
    confirmable(p)
    p.add_argument(
        "--mountpoint",
        action="append",
        default=[],
        metavar="M",
        help="freeze only these mount points",
    )
    p.add_argument(
        "--thaw-after",
        type=float,
        metavar="S",
        help="seconds until this process thaws (0: leave frozen and exit)",
    )
    p = sub.add_parser("thaw", help="thaw guest filesystems")
    selectable(p)
    confirmable(p)
    p = sub.add_parser("fstrim", help="discard unused blocks in the guests")
    selectable(p)
    confirmable(p)
    p.add_argument(
        "--minimum", type=int, metavar="BYTES", help="skip free ranges smaller than this"
    )
    p = sub.add_parser("shutdown", help="shut guests down through the agent")
    selectable(p)
    confirmable(p)
    p.add_argument("--mode", choices=["powerdown", "halt", "reboot"], default="powerdown")
    p = sub.add_parser("suspend", help="suspend guests (ram, disk, hybrid)")
    p.add_argument("kind", choices=["ram", "disk", "hybrid"])
    selectable(p)
    confirmable(p)
    p = sub.add_parser(
        "exec", help="run a command in the guests: exec [SELECT] -- COMMAND [ARG]..."
    )
    selectable(p)
    confirmable(p)
    p.add_argument("--timeout", type=float, metavar="S", help="seconds the command may run")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG]...")
    p = sub.add_parser("cp", help="copy a file: cp VM:PATH LOCAL|DIR|- (stdout) | cp LOCAL VM:PATH")
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument(
        "--force", action="store_true", help="replace an existing local file without asking"
    )
    confirmable(p)
    p = sub.add_parser("agent", help="any agent command, raw: agent VM COMMAND [JSON_ARGUMENTS]")
    confirmable(p)
    p.add_argument(
        "--thaw-after",
        type=float,
        metavar="S",
        help="for a raw freeze: seconds until this process thaws (as `freeze`)",
    )
    p.add_argument("vm")
    p.add_argument("agent_command", metavar="COMMAND")
    p.add_argument("arguments", nargs="?", metavar="JSON_ARGUMENTS")
    return parser


def _demo_default(argv: Sequence[str]) -> list[str]:
    """`--demo status` means 24 VMs, not a count called "status"."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--demo" and (i + 1 == len(out) or not out[i + 1].isdigit()):
            out[i] = "--demo=24"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_demo_default(sys.argv[1:] if argv is None else argv))
    try:
        return asyncio.run(run(args)) if args.command else run_dashboard_command(args)
    except ConfigError as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ReadOnlyError) as exc:
        print(f"qgadash: {exc}", file=sys.stderr)
        return EXIT_USAGE
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
    if args.demo is not None:
        return asyncio.run(_demo_dashboard(args))
    config = load(args)
    from qgadash.ui.app import run_dashboard

    audit = AuditLog(keep_argv=args.audit_argv)
    engine = FleetEngine(config, audit=audit, journal=HoldJournal())
    return run_dashboard(engine, theme=args.theme, config_label=str(config.path))


async def _demo_dashboard(args: argparse.Namespace) -> int:
    from qgadash.ui.app import QgadashApp, run_app

    async with contextlib.AsyncExitStack() as stack:
        config = await _demo_config(args, stack)
        label = f"demo · {_demo_count(args)} simulated VMs"
        app = QgadashApp(FleetEngine(config), config_label=label, theme=args.theme)
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


STOP_RETRY_BUDGET = 20.0  # seconds a thaw on exit (signal, error) is retried


async def run(args: argparse.Namespace) -> int:
    """Run one subcommand; whatever ends it (return, error, any stop signal), the engine
    stops and thaws what this process froze, and the exit status says if it could not."""
    task = asyncio.current_task()
    assert task is not None
    engine: FleetEngine | None = None

    def cancel_command(_sig: signal.Signals) -> None:
        task.cancel()

    watch = SignalWatch(cancel_command, lambda: len(engine.frozen_by_us()) if engine else 0)
    watch.install()
    try:
        async with contextlib.AsyncExitStack() as stack:
            config = await _demo_config(args, stack) if args.demo is not None else load(args)
            writes = args.command in DESTRUCTIVE or (
                args.command == "cp" and ":" in args.destination
            )
            if config.settings.read_only and writes:
                raise ReadOnlyError(f"read-only mode: `{args.command}` is not allowed")
            audit = AuditLog(keep_argv=args.audit_argv)
            engine = FleetEngine(
                config, audit=None if args.command == "status" else audit, journal=HoldJournal()
            )
            engine.keeping.audit = audit  # settling an earlier run's holds is always audited
            code = EXIT_FAILED
            try:
                report_settled(await engine.settle_journal())
                code = await COMMANDS[args.command](engine, args)
            except asyncio.CancelledError:
                if watch.received is None:
                    raise
                task.uncancel()
                code = 128 + watch.received
            finally:
                watch.stopping()
                if engine.frozen_by_us():
                    say(f"qgadash: thawing {len(engine.frozen_by_us())} VMs before exit…")
                budget = STOP_RETRY_BUDGET if watch.received is not None else 0.0
                results = await engine.stop(watch.reason, budget)
                code = report_thaws(results, code)
            return code
    except asyncio.CancelledError:
        if watch.received is None:
            raise
        return 128 + watch.received
    finally:
        watch.remove()


def report_thaws(results: list[ActionResult], code: int) -> int:
    """Say what the exit thaw did; EXIT_FAILED if any VM is not known to be thawed."""
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            say(f"thawed {printable(r.vm_id, 80)}")
    for r in failed:
        say(
            f"qgadash: COULD NOT THAW {printable(r.vm_id, 80)}: {printable(r.error, 300)}"
            " — it may still be frozen; thaw it by hand (`qgadash thaw --match VM`)"
        )
    return EXIT_FAILED if failed and code == EXIT_OK else code


def report_settled(settled: Sequence[Settled]) -> None:
    """What this start did with holds an earlier, dead qgadash left in the journal."""
    for s in settled:
        vm = printable(s.vm_id, 80)
        if s.outcome == "thawed":
            say(f"qgadash: thawed {vm}: an earlier qgadash froze it and died before its thaw")
        elif s.outcome == "thawed by keeper":
            say(f"qgadash: {vm} was thawed at its deadline by the keeper ({s.detail})")
        elif s.outcome == "pending":
            say(f"qgadash: {vm} is frozen by an earlier qgadash; its {printable(s.detail)}")
        else:
            say(
                f"qgadash: COULD NOT THAW {vm or 'a journal entry'}, owed by an earlier qgadash: "
                f"{printable(s.detail, 300)}"
            )


# -- selection and confirmation ------------------------------------------------------------


def select(engine: FleetEngine, args: argparse.Namespace) -> list[VmSnapshot]:
    chosen = []
    for snap in engine.store.snapshots():
        if args.match and not any(fnmatch.fnmatchcase(snap.id, g) for g in args.match):
            continue
        if args.tag and not set(args.tag) & set(snap.ref.tags):
            continue
        chosen.append(snap)
    return chosen


def confirm(question: str, args: argparse.Namespace) -> bool:
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} — refusing without a terminal; add --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _names(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


async def _poll_selected(engine: FleetEngine, args: argparse.Namespace) -> list[VmSnapshot]:
    await engine.poll_once()
    chosen = select(engine, args)
    if not chosen:
        raise UsageError("no VM matches the selection")
    return chosen


def _print_results(
    action: str, results: list[ActionResult], skipped: Sequence[tuple[str, str]], as_json: bool
) -> int:
    all_results = list(results) + [
        ActionResult(vm_id, False, None, f"skipped: {why}") for vm_id, why in skipped
    ]
    if as_json:
        print(json.dumps(action_document(action, all_results), indent=2))
    else:
        for r in all_results:
            mark = "ok" if r.ok else ("UNKNOWN" if r.ok is None else "FAILED")
            detail = _value_text(r.value) if r.ok else printable(r.error, 300)
            print(f"{r.vm_id:<32} {mark:<8} {detail}")
    return EXIT_OK if all_results and all(r.ok for r in all_results) else EXIT_FAILED


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return printable(value, 200)
    return printable(json.dumps(value), 200)


# -- subcommands -------------------------------------------------------------------------------


async def cmd_status(engine: FleetEngine, args: argparse.Namespace) -> int:
    chosen = await _poll_selected(engine, args)
    if args.json:
        print(json.dumps(status_document(chosen, engine.store.hypervisors()), indent=2))
    else:
        print(status_table(chosen))
        for hv in engine.store.hypervisors():
            if hv.error:
                print(f"hypervisor {hv.name}: {hv.state.value}: {printable(hv.error, 300)}")
    return EXIT_OK if all(s.agent is AgentState.OK for s in chosen) else EXIT_FAILED


def status_table(snapshots: Sequence[VmSnapshot]) -> str:
    header = ("VM", "AGENT", "OS", "HOSTNAME", "IPV4", "FS", "FULL", "RTT", "DETAIL")
    rows = [header]
    for s in snapshots:
        f = s.facts
        full = f.fullest_filesystem
        rows.append(
            (
                printable(s.id, 40),
                s.agent.value,
                printable(f.os_label, 24, "-"),
                printable(f.hostname, 24, "-"),
                printable(f.first_ipv4, 39, "-"),
                s.freeze.value if s.freeze.value != "unknown" else "?",
                f"{full.used_fraction * 100:.0f}%"
                if full and full.used_fraction is not None
                else "-",
                f"{s.latency_ms:.1f}ms" if s.latency_ms is not None else "-",
                printable(s.error, 120, "") if s.error else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    return "\n".join(line.rstrip() for line in lines)


async def cmd_freeze(engine: FleetEngine, args: argparse.Namespace) -> int:
    from qgadash.fleet.actions import Action

    chosen = await _poll_selected(engine, args)
    plan = engine.plan(Action.FREEZE, [s.id for s in chosen])
    after = engine.settings.thaw_after if args.thaw_after is None else args.thaw_after
    if after < 0:
        raise UsageError("--thaw-after must be 0 or more seconds")
    if not plan.eligible:
        return _print_results("freeze", [], plan.skipped, args.json)
    when = "never (--thaw-after 0; no keeper)" if after == 0 else f"after {after:g} s"
    if after > 0:
        say(keeper_summary(await engine.keepers(plan.eligible), engine))
    if not confirm(
        f"Freeze {len(plan.eligible)} VMs ({_names(plan.eligible)}), thaw {when}?", args
    ):
        return EXIT_FAILED
    results = await engine.freeze(
        plan.eligible, mountpoints=args.mountpoint or None, thaw_after=after
    )
    frozen = [r.vm_id for r in results if r.ok]
    status = _print_results("freeze", results, plan.skipped, args.json)
    if after == 0:
        for vm_id in engine.frozen_by_us():  # handed to the operator: not ours to thaw
            engine.guard.release(vm_id, "left frozen (--thaw-after 0)")
        if frozen:
            say(f"left frozen: {len(frozen)} VMs; no keeper armed (--thaw-after 0)")
        return status
    if engine.guard.owed():
        kinds = sorted({h.keeper for h in engine.guard.holds()})
        say(
            f"frozen: {len(frozen)} VMs; thawing in {after:g} s (keeper: {', '.join(kinds)}; "
            "Ctrl-C, SIGTERM or closing the terminal thaws now)"
        )
        if not await hold_until_thawed(engine, after + engine.settings.thaw_retry_for):
            status = EXIT_FAILED  # `run` names every VM still frozen
        elif not engine.guard.owed():
            say(f"thawed: {len(frozen)} VMs")
    return status


def keeper_summary(keepers: dict[str, str | None], engine: FleetEngine) -> str:
    """Before a freeze: which keepers will thaw at the deadline if this process cannot,
    and every VM that gets none (and why)."""
    armed: dict[str, int] = {}
    none: list[str] = []
    for vm_id, why in keepers.items():
        if why is None:
            snap = engine.store.get(vm_id)
            link = snap.ref.hypervisor if snap else "?"
            where = "this machine" if engine.is_local(vm_id) else f"hypervisor {link}"
            armed[where] = armed.get(where, 0) + 1
        else:
            none.append(f"  {printable(vm_id, 80)}: {printable(why, 200)}")
    parts = [f"{n} on {where}" for where, n in sorted(armed.items())]
    text = "keepers (thaw at the deadline even if qgadash dies): " + (", ".join(parts) or "none")
    if none:
        text += f"\nNO KEEPER for {len(none)} VMs (only this process will thaw them):\n"
        text += "\n".join(none)
    return text


async def hold_until_thawed(engine: FleetEngine, seconds: float) -> bool:
    """Wait while the guard thaws at the deadline (retrying failures) for up to `seconds`;
    whether every hold ended. A stop signal ends the hold early, as the contract says
    ("until Ctrl-C, which thaws at once"): the command goes on and `run` thaws."""
    try:
        async with asyncio.timeout(seconds):
            await engine.guard.settled()
    except TimeoutError:
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.uncancel() == 0:
            return True  # the thaw on exit decides the exit status
        raise
    return True


async def cmd_thaw(engine: FleetEngine, args: argparse.Namespace) -> int:
    from qgadash.fleet.actions import Action

    chosen = await _poll_selected(engine, args)
    plan = engine.plan(Action.THAW, [s.id for s in chosen])
    if plan.eligible and not confirm(
        f"Thaw {len(plan.eligible)} VMs ({_names(plan.eligible)})?", args
    ):
        return EXIT_FAILED
    results = await engine.thaw(plan.eligible) if plan.eligible else []
    # "not frozen" is not a failure of a thaw: the goal is reached.
    skipped = [(i, why) for i, why in plan.skipped if why != "not frozen"]
    done = [ActionResult(i, True, 0, None) for i, why in plan.skipped if why == "not frozen"]
    return _print_results("thaw", results + done, skipped, args.json)


async def _simple_action(
    engine: FleetEngine, args: argparse.Namespace, action_name: str, question: str, run: Any
) -> int:
    from qgadash.fleet.actions import Action

    action = {
        "fstrim": Action.FSTRIM,
        "shutdown": Action.SHUTDOWN,
        "suspend-ram": Action.SUSPEND_RAM,
        "suspend-disk": Action.SUSPEND_DISK,
        "suspend-hybrid": Action.SUSPEND_HYBRID,
        "exec": Action.EXEC,
    }[action_name]
    chosen = await _poll_selected(engine, args)
    plan = engine.plan(action, [s.id for s in chosen])
    if plan.eligible and not confirm(
        f"{question} {len(plan.eligible)} VMs ({_names(plan.eligible)})?", args
    ):
        return EXIT_FAILED
    results = await run(plan.eligible) if plan.eligible else []
    return _print_results(action_name, results, plan.skipped, args.json)


async def cmd_fstrim(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine, args, "fstrim", "Trim", lambda ids: engine.fstrim(ids, minimum=args.minimum)
    )


async def cmd_shutdown(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine,
        args,
        "shutdown",
        f"Shut down ({args.mode})",
        lambda ids: engine.shutdown(ids, mode=args.mode),
    )


async def cmd_suspend(engine: FleetEngine, args: argparse.Namespace) -> int:
    return await _simple_action(
        engine,
        args,
        f"suspend-{args.kind}",
        f"Suspend to {args.kind}",
        lambda ids: engine.suspend(ids, kind=args.kind),
    )


async def cmd_exec(engine: FleetEngine, args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("exec needs a command: qgadash exec [SELECT] -- COMMAND [ARG]...")
    if args.json:
        return await _simple_action(
            engine,
            args,
            "exec",
            f"Run {argv[0]!r} on",
            lambda ids: engine.exec(ids, argv, timeout=args.timeout),
        )
    from qgadash.fleet.actions import Action

    chosen = await _poll_selected(engine, args)
    plan = engine.plan(Action.EXEC, [s.id for s in chosen])
    if plan.eligible and not confirm(
        f"Run {argv[0]!r} on {len(plan.eligible)} VMs ({_names(plan.eligible)})?", args
    ):
        return EXIT_FAILED
    results = await engine.exec(plan.eligible, argv, timeout=args.timeout) if plan.eligible else []
    status = EXIT_OK
    for r in results:
        if r.ok and isinstance(r.value, dict):
            code = r.value.get("exitcode")
            how = f"exit {code}" if code is not None else f"signal {r.value.get('signal')}"
            print(f"== {r.vm_id} ({how})")
            out = printable_block(r.value.get("stdout", ""))
            err = printable_block(r.value.get("stderr", ""))
            if out:
                print(out)
            if err:
                print(err, file=sys.stderr)
            if code != 0:
                status = EXIT_FAILED
        else:
            print(f"== {r.vm_id} FAILED: {printable(r.error, 300)}")
            status = EXIT_FAILED
    for vm_id, why in plan.skipped:
        print(f"== {vm_id} skipped: {why}")
        status = EXIT_FAILED
    return status


def printable_block(text: str) -> str:
    """Multi-line guest output: each line made safe, newlines kept."""
    return (
        "\n".join(printable(line, 4000) for line in text.rstrip("\n").split("\n")) if text else ""
    )


def _split_remote(spec: str, ids: set[str]) -> tuple[str, str] | None:
    head, sep, tail = spec.partition(":")
    if sep and head in ids:
        return head, tail
    return None


async def cmd_cp(engine: FleetEngine, args: argparse.Namespace) -> int:
    await engine.discover()
    ids = set(engine.store.ids())
    src = _split_remote(args.source, ids)
    dst = _split_remote(args.destination, ids)
    if (src is None) == (dst is None):
        raise UsageError("cp needs exactly one side as VM:PATH (VM is an id such as hv1/web-1)")
    if src is not None:
        return await _download(engine, args, *src)
    assert dst is not None
    if engine.settings.read_only:
        raise ReadOnlyError("read-only mode: writing to a guest is not allowed")
    vm_id, path = dst
    local = Path(args.source)
    if not local.is_file():
        raise UsageError(f"{local}: not a file")
    if not confirm(f"Write {local} ({local.stat().st_size} bytes) to {vm_id}:{path}?", args):
        return EXIT_FAILED
    try:
        size = await engine.files.upload(vm_id, local, path)
    except (AgentError, OSError) as exc:
        return _cp_failed(vm_id, path, exc)
    print(f"copied {size} bytes from {local} to {vm_id}:{printable(path)}", file=sys.stderr)
    return EXIT_OK


async def _download(engine: FleetEngine, args: argparse.Namespace, vm_id: str, path: str) -> int:
    """cp VM:PATH LOCAL: an existing LOCAL is replaced only with --force or a "y" on a
    terminal; a directory gets the file under the name the operator typed; `-` is stdout."""
    if args.destination == "-":
        try:
            size = await engine.files.download_to(vm_id, path, sys.stdout.buffer.write)
        except (AgentError, OSError) as exc:
            return _cp_failed(vm_id, path, exc)
        sys.stdout.buffer.flush()
        return EXIT_OK
    local = Path(args.destination)
    if local.is_dir():
        name = PurePosixPath(path.replace("\\", "/")).name
        if name in ("", ".", ".."):
            raise UsageError(f"{printable(path)}: no file name to save under; name the file")
        local = local / name
    overwrite = bool(args.force)
    if os.path.lexists(local) and not overwrite:
        if not sys.stdin.isatty():
            print(f"qgadash: {local} exists; not replaced (add --force)", file=sys.stderr)
            return EXIT_FAILED
        # Not `confirm`: --yes answers "run the copy", not "replace my file".
        if input(f"{local} exists. Replace it? [y/N] ").strip().lower() not in ("y", "yes"):
            return EXIT_FAILED
        overwrite = True
    try:
        size = await engine.files.download(vm_id, path, local, overwrite=overwrite)
    except (AgentError, OSError) as exc:
        return _cp_failed(vm_id, path, exc)
    print(f"copied {size} bytes from {vm_id}:{printable(path)} to {local}", file=sys.stderr)
    return EXIT_OK


def _cp_failed(vm_id: str, path: str, exc: Exception) -> int:
    """A failed copy: one line naming the guest file, no traceback."""
    print(f"qgadash: {vm_id}:{printable(path)}: {printable(str(exc), 300)}", file=sys.stderr)
    return EXIT_FAILED


async def cmd_agent(engine: FleetEngine, args: argparse.Namespace) -> int:
    await engine.discover()
    if engine.store.get(args.vm) is None:
        raise UsageError(f"{args.vm}: no such VM (ids look like HYPERVISOR/NAME)")
    arguments = None
    if args.arguments:
        try:
            arguments = json.loads(args.arguments)
        except ValueError as exc:
            raise UsageError(f"JSON_ARGUMENTS is not JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise UsageError("JSON_ARGUMENTS must be a JSON object")
    name = args.agent_command
    if command_policy(name).freeze:
        # A raw freeze is a freeze: the same guard, keepers, hold and exit status.
        mountpoints = (arguments or {}).get("mountpoints")
        if mountpoints is not None and not (
            isinstance(mountpoints, list) and all(isinstance(m, str) for m in mountpoints)
        ):
            raise UsageError("mountpoints must be a JSON list of strings")
        freeze_args = argparse.Namespace(
            match=[args.vm],
            tag=[],
            json=False,
            yes=args.yes,
            mountpoint=mountpoints or [],
            thaw_after=args.thaw_after,
        )
        return await cmd_freeze(engine, freeze_args)
    if changes_guest(name, arguments) and not confirm(
        f"Run {printable(name, 60)} on {args.vm}? It may change the guest", args
    ):
        return EXIT_FAILED
    result = await engine.agent_command(args.vm, name, arguments)
    if result.ok:
        print(json.dumps(result.value, indent=2))
        return EXIT_OK
    print(f"qgadash: {args.vm}: {printable(result.error, 500)}", file=sys.stderr)
    return EXIT_FAILED


COMMANDS = {
    "status": cmd_status,
    "freeze": cmd_freeze,
    "thaw": cmd_thaw,
    "fstrim": cmd_fstrim,
    "shutdown": cmd_shutdown,
    "suspend": cmd_suspend,
    "exec": cmd_exec,
    "cp": cmd_cp,
    "agent": cmd_agent,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
