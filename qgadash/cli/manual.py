"""`qgadash COMMAND --help` as a short manual page: what the command does, what it is
safe to rely on, examples, exit status. Also the options of `serve` and `metrics`."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping

from qgadash.exporter import DEFAULT_LISTEN

EXIT_STATUS = "exit status: 0 every selected VM answered and every action succeeded; 1 at \
least one did not; 2 usage or configuration error."
SELECT = "SELECT: --match GLOB (against the VM id HYPERVISOR/NAME) and --tag TAG, each \
repeatable (several: any of them); none selects every VM."
CONFIRM = "It asks on a terminal (the default answer is no) and needs --yes without one; \
--read-only refuses it. Every action is written to the audit log."

MANUAL: dict[str, tuple[str, str]] = {
    "status": (
        "Discover the fleet, poll every selected VM once and print a table, or with --json "
        "one document (contracts.md): agent state, OS, addresses, filesystems, freeze state.",
        f"examples:\n  qgadash status --tag prod\n  qgadash status --json | jq '.vms[].id'"
        f"\n\n{SELECT}\n{EXIT_STATUS}",
    ),
    "freeze": (
        "Freeze the guests' filesystems (guest-fsfreeze-freeze) and hold the freeze in the "
        "foreground: thawed after --thaw-after seconds (default thaw_after), or at once on "
        "Ctrl-C, SIGTERM, SIGQUIT or a closed terminal. A keeper next to each guest and a "
        "journal are armed before the freeze goes out, so it is thawed by its deadline even "
        "if this process is killed. --thaw-after 0 leaves the guests frozen and exits.",
        f"examples:\n  qgadash freeze --tag db --thaw-after 30 --yes\n"
        f"  qgadash freeze --match 'hv1/*' --mountpoint /var/lib/pgsql\n\n{CONFIRM}\n"
        f"{SELECT}\n{EXIT_STATUS} A guest this process froze and could not prove thawed "
        "makes it 1.",
    ),
    "thaw": (
        "Thaw the guests' filesystems (guest-fsfreeze-thaw), whoever froze them.",
        f"example:\n  qgadash thaw --match hv1/db-01 --yes\n\n{CONFIRM}\n{SELECT}\n{EXIT_STATUS}",
    ),
    "fstrim": (
        "Discard unused blocks in the guests (guest-fstrim); prints what each trimmed.",
        f"example:\n  qgadash fstrim --tag thin --minimum 1048576\n\n{SELECT}\n{EXIT_STATUS}",
    ),
    "shutdown": (
        "Shut guests down through their agent (guest-shutdown): powerdown (default), halt or "
        "reboot. The VM keeps its row as stopped or rebooting until its agent is back.",
        f"example:\n  qgadash shutdown --match 'lab/test-*' --mode reboot --yes\n\n{CONFIRM}\n"
        f"{SELECT}\n{EXIT_STATUS}",
    ),
    "suspend": (
        "Suspend guests to RAM, disk or both (guest-suspend-ram|disk|hybrid).",
        f"example:\n  qgadash suspend ram --match lab/desk-01 --yes\n\n{CONFIRM}\n{SELECT}\n"
        f"{EXIT_STATUS}",
    ),
    "exec": (
        "Run a command in each selected guest (guest-exec) and print its exit code and "
        "output. Command lines are masked in the audit log unless --audit-argv.",
        f"example:\n  qgadash exec --tag web --yes -- systemctl is-active nginx\n\n{CONFIRM}\n"
        f"{SELECT}\n{EXIT_STATUS}",
    ),
    "time-sync": (
        "Set the selected guests' clocks (guest-set-time): from the host by default (the "
        "guest reads its hardware clock, which QEMU keeps at the host's time: `virsh domtime "
        "--sync`), or to --time: `now` sends this machine's clock, which also corrects a wrong "
        "hardware clock (qemu-ga writes it after setting the time). Prints each clock's drift "
        "from ours before and after.",
        f"examples:\n  qgadash time-sync --tag prod --yes\n"
        f"  qgadash time-sync --match lab/vm1 --time 2026-11-29T14:00:00Z\n\n{CONFIRM}\n"
        f"{SELECT}\n{EXIT_STATUS}",
    ),
    "password": (
        "Set a user's password in the selected guests (guest-set-user-password). It is asked "
        "twice on the terminal, or read from stdin as a crypt(3) hash with --crypted; never "
        "an argument, never in the audit log (which records the user only).",
        f"examples:\n  qgadash password --tag lab --user ops\n"
        f"  openssl passwd -6 | qgadash password --tag lab --user ops --crypted --yes\n\n"
        f"{CONFIRM}\n{SELECT}\n{EXIT_STATUS}",
    ),
    "ssh-keys": (
        "A user's authorized SSH keys (guest-ssh-*-authorized-keys): list them per VM, or "
        "add or remove the keys of KEYFILE (- for stdin). Before a change, each VM's diff "
        "(+ added, - removed) is printed, then confirmed.",
        f"examples:\n  qgadash ssh-keys list --tag prod --user ops\n"
        f"  qgadash ssh-keys remove leaked.pub --tag prod --user ops\n\n{CONFIRM}\n"
        f"{SELECT}\n{EXIT_STATUS}",
    ),
    "vcpus": (
        "The guests' vCPUs online and offline (guest-get-vcpus); with --online N, keep the N "
        "lowest online and take the others offline (guest-set-vcpus; cpu0 never goes).",
        f"examples:\n  qgadash vcpus --tag batch\n  qgadash vcpus --tag batch --online 2 --yes"
        f"\n\n{CONFIRM}\n{SELECT}\n{EXIT_STATUS}",
    ),
    "cp": (
        "Copy one file out of a guest (cp VM:PATH LOCAL|DIR|-) or into one (cp LOCAL "
        "VM:PATH). A download never replaces a local file without --force or a yes; it "
        "is written beside the target and linked into place.",
        "examples:\n  qgadash cp hv1/web-01:/etc/os-release .\n"
        "  qgadash cp ./motd hv1/web-01:/etc/motd --yes\n\n" + EXIT_STATUS,
    ),
    "agent": (
        "Send any agent command, raw, and print its reply as JSON. The command policy "
        "applies: a command that may change the guest asks (or needs --yes), read-only mode "
        "refuses it, and a raw freeze is held and thawed like `freeze`.",
        "examples:\n  qgadash agent hv1/web-01 guest-get-osinfo\n"
        "  qgadash agent hv1/web-01 guest-get-fsinfo | jq '.[].mountpoint'\n\n" + EXIT_STATUS,
    ),
    "serve": (
        "The dashboard in a browser, through textual-serve. Each start makes a random token "
        "and prints the URL that carries it; the page and its websocket refuse (403) "
        "anyone without it. Every browser session runs its own `qgadash --hosts FILE` "
        "dashboard process with the same freeze safety as in a terminal: closing the tab, "
        "stopping serve or a stop signal quits that dashboard, which thaws what it froze. "
        "One browser session at a time unless --max-sessions says more (every session "
        "polls the whole fleet, and a qemu-ga socket serves one client at a time).",
        "examples:\n  qgadash serve                        # http://127.0.0.1:8000/?token=...\n"
        "  qgadash --read-only serve --port 8080\n"
        "  ssh -L 8000:127.0.0.1:8000 jumpbox   # reach it from your desk, still loopback\n\n"
        "A bind address other than loopback needs --allow-remote: anyone who has the URL "
        "(and so the token) can then act on the fleet from anywhere that reaches the port, "
        "over plain HTTP. Prefer an SSH tunnel or a TLS reverse proxy.\n"
        "It runs until stopped (Ctrl-C, SIGTERM): exit status 128 + the signal's number once "
        "every session's dashboard has quit; 2 usage or configuration error. A dashboard "
        "that could not prove a thaw says so (COULD NOT THAW ...) on serve's output.",
    ),
    "metrics": (
        "A Prometheus exporter: one process polls the fleet (the same engine as the "
        "dashboard, at poll_interval) and serves the latest state at /metrics; a scrape "
        "never waits for a poll. Per VM, labelled vm and hypervisor: qgadash_agent_up, "
        "qgadash_agent_state, qgadash_agent_rtt_seconds, qgadash_fsfreeze_frozen, "
        "qgadash_filesystem_used_bytes and _size_bytes (mountpoint, fstype), "
        "qgadash_network_receive_bytes_total and _transmit_bytes_total (interface), "
        "qgadash_load1, qgadash_time_drift_seconds, qgadash_guest_info (os, hostname, "
        "agent_version), qgadash_agent_last_seen_timestamp_seconds; per hypervisor "
        "qgadash_hypervisor_up and _vms; the engine's qgadash_polls_total, "
        "qgadash_poll_duration_seconds and qgadash_vms. Guest text in labels is sanitised; "
        "at most 16 interfaces and 32 mount points per VM. Read-only: it never acts.",
        "examples:\n  qgadash metrics                      # http://127.0.0.1:9633/metrics\n"
        "  qgadash --hosts rack-a.toml metrics --listen 10.0.0.5:9633\n"
        "  qgadash metrics --shard prod          # only hypervisors tagged prod\n\n"
        "deploy/ has a systemd unit, Prometheus alert rules and a Grafana dashboard; "
        "docs/scale.md says how to shard an estate across exporters.\n"
        "It runs until stopped (Ctrl-C, SIGTERM): exit status 128 + the signal's number; 2 "
        "usage or configuration error, or the address cannot be bound.",
    ),
}


def describe_commands(choices: Mapping[str, argparse.ArgumentParser]) -> None:
    """Give every subcommand its manual text (a command without one keeps its help line)."""
    for name, parser in choices.items():
        description, epilog = MANUAL.get(name, (parser.description or "", ""))
        parser.description = _wrapped(description) or parser.description
        parser.epilog = _wrapped(epilog) or parser.epilog
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _wrapped(text: str, width: int = 88) -> str:
    """Long lines wrapped, short ones (examples) kept as written."""
    return "\n".join(
        textwrap.fill(line, width) if len(line) > width else line for line in text.split("\n")
    )


def serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not loopback (anyone with the URL can act on the fleet)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=1,
        metavar="N",
        help="browser sessions open at once (default 1); each runs its own dashboard",
    )


def metrics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve /metrics on (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--shard",
        action="append",
        default=[],
        metavar="TAG",
        help="poll only hypervisors (and [[vm]] entries) with this tag; repeatable: any of them",
    )
