"""The command line's grammar: subcommands, their options and the SELECT options."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from qgadash import __version__
from qgadash.cli.manual import describe_commands, metrics_arguments, serve_arguments

Adder = Callable[[argparse.ArgumentParser], None]


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
        "--log-file",
        metavar="PATH",
        help="write a log here (warnings and errors, with tracebacks; --debug for more)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log in detail, down to each VM's channel (secrets masked); needs --log-file",
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
        "--low-bandwidth",
        action="store_true",
        help="dashboard over a slow link: slower non-critical columns, no sparklines",
    )
    parser.add_argument(
        "--colors",
        choices=("auto", "truecolor", "256", "16"),
        help="dashboard colour depth (default: dashboard.json's, else TERM/COLORTERM)",
    )
    parser.add_argument(
        "--demo",
        nargs="?",
        type=int,
        const=24,
        metavar="N",
        help="run on N simulated VMs (default 24)",
    )
    parser.add_argument(
        "--prometheus",
        metavar="URL",
        help="read-only estate view: every VM that Prometheus has from qgadash exporters",
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
    admin_parsers(sub, selectable, confirmable)
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
    p = sub.add_parser("serve", help="the dashboard in a browser (textual-serve)")
    serve_arguments(p)
    p = sub.add_parser("metrics", help="a Prometheus exporter: poll the fleet, serve /metrics")
    metrics_arguments(p)
    describe_commands(sub.choices)
    return parser


def admin_parsers(sub: Any, selectable: Adder, confirmable: Adder) -> None:
    """time-sync, password, ssh-keys, vcpus (qgadash.cli.admin)."""
    p = sub.add_parser(
        "time-sync", help="set guest clocks from the host (or --time); drift before and after"
    )
    selectable(p)
    confirmable(p)
    p.add_argument(
        "--time",
        metavar="WHEN",
        help="instead: now (this machine's clock), ISO 8601 (UTC if no zone) or epoch seconds",
    )
    p = sub.add_parser(
        "password", help="set a user's password (asked twice on a terminal; never an argument)"
    )
    selectable(p)
    confirmable(p)
    p.add_argument("--user", required=True, metavar="NAME")
    p.add_argument("--crypted", action="store_true", help="read a crypt(3) hash from stdin instead")
    p = sub.add_parser("ssh-keys", help="list, add or remove a user's authorized SSH keys")
    p.add_argument("operation", choices=["list", "add", "remove"])
    p.add_argument("keyfile", nargs="?", metavar="KEYFILE", help="public keys (- for stdin)")
    selectable(p)
    confirmable(p)
    p.add_argument("--user", required=True, metavar="NAME")
    p = sub.add_parser("vcpus", help="show online/offline vCPUs; --online N to change")
    selectable(p)
    confirmable(p)
    p.add_argument("--online", type=int, metavar="N", help="keep N vCPUs online (the lowest ids)")


def demo_default(argv: Sequence[str]) -> list[str]:
    """`--demo status` means 24 VMs, not a count called "status"."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--demo" and (i + 1 == len(out) or not out[i + 1].isdigit()):
            out[i] = "--demo=24"
    return out
