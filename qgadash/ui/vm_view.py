"""One VM described for people: the text of the detail tabs. No Textual here.

Every guest-reported string goes through `plain`; times are relative to the clock
passed in, so the same snapshot always draws the same text.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

from qgadash.fleet.admin_view import AdminView, key_summary
from qgadash.fleet.guard import Hold
from qgadash.fleet.holds import LOCAL_KEEPER, NO_KEEPER
from qgadash.fleet.live_stats import LiveStats
from qgadash.fleet.model import AgentState, FreezeState, VmSnapshot
from qgadash.fleet.store import CounterSample
from qgadash.ui.fleet_view import Palette, agent_label
from qgadash.ui.formatting import (
    format_age,
    format_bytes,
    format_countdown,
    format_drift,
    format_latency,
    format_rate,
    sparkline,
)
from qgadash.ui.plain import plain

__all__ = [
    "admin_text",
    "agent_text",
    "command_reason",
    "freeze_text",
    "keeper_text",
    "live_text",
    "network_text",
    "nic_rates",
    "overview_text",
    "storage_text",
    "title_text",
]

_LABEL = 12


def _row(text: Text, label: str, value: Text | str) -> None:
    if text:
        text.append("\n")
    text.append(f" {label:<{_LABEL}}", style=Style(bold=True))
    text.append(" ")
    text.append_text(value if isinstance(value, Text) else Text(value))


def title_text(snap: VmSnapshot, palette: Palette) -> Text:
    """`hv1/db-01 · Rocky Linux 9.4 (5.14.0-427) · agent 8.2.0 · rtt 0.6 ms · time drift +0.3 s`"""
    facts = snap.facts
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(" ")
    text.append_text(plain(snap.id, 80, style=Style(bold=True)))
    if facts.os_label:
        text.append(" · ")
        text.append_text(plain(facts.os_label, 60))
        if facts.os and facts.os.kernel_release:
            text.append(" (")
            text.append_text(plain(facts.os.kernel_release, 40))
            text.append(")")
    if facts.version:
        text.append(" · agent ")
        text.append_text(plain(facts.version, 30))
    state_style = palette.ok if snap.agent is AgentState.OK else palette.error
    if snap.lifecycle is not None:
        state_style = palette.accent
    text.append(" · ")
    text.append(agent_label(snap), style=state_style)
    if snap.latency_ms is not None:
        text.append(f" · rtt {format_latency(snap.latency_ms)}")
    if facts.time_drift_s is not None:
        text.append(f" · time drift {format_drift(facts.time_drift_s)}")
    return text


def keeper_text(kind: str, vm_id: str, palette: Palette, *, timed: bool = True) -> Text:
    """Where the thaw of one hold is kept beyond this process, in words: `local keeper`,
    `systemd timer on hv2`, `no keeper` (in the error colour for a timed hold: if this
    qgadash dies, nothing thaws it at its deadline)."""
    if kind == LOCAL_KEEPER:
        return Text("local keeper (a process on this machine)")
    if kind == NO_KEEPER or kind.startswith(NO_KEEPER + ":"):
        # "none: why" when a timed hold's keeper could not be armed
        text = Text("no keeper", style=palette.error if timed else palette.stale)
        why = kind.partition(":")[2].strip()
        if why:
            text.append(" (")
            text.append_text(plain(why, 160))
            text.append(")")
        return text
    hypervisor = vm_id.split("/", 1)[0]
    what = {"systemd": "systemd timer", "nohup": "nohup keeper"}.get(kind, f"{kind} keeper")
    text = plain(what, 40)
    text.append(" on ")
    text.append_text(plain(hypervisor, 40))
    return text


def freeze_text(snap: VmSnapshot, now: float, palette: Palette, hold: Hold | None = None) -> Text:
    """The freeze state; for a hold of this session also its deadline and its keeper."""
    if snap.thaw_error:
        text = Text("THAW FAILED: ", style=palette.error + Style(bold=True))
        text.append_text(plain(snap.thaw_error, 200, style=palette.error))
        return text
    if hold is not None:
        if snap.freeze is FreezeState.UNKNOWN:
            text = Text("? freeze outcome unknown; held by this session", style=palette.warning)
        else:
            text = Text("❄ frozen by this session", style=palette.frozen)
        if hold.deadline is not None:
            left = format_countdown(hold.deadline - now)
            text.append(f", thaws in {left}", style=palette.frozen)
        else:
            text.append(", no automatic thaw (thawed when qgadash quits)", style=palette.frozen)
        text.append(" · keeper: ")
        text.append_text(
            keeper_text(hold.keeper, hold.vm_id, palette, timed=hold.deadline is not None)
        )
        return text
    if snap.freeze is FreezeState.FROZEN:
        if snap.thaw_deadline is not None:
            left = format_countdown(snap.thaw_deadline - now)
            return Text(f"❄ frozen by this session, thaws in {left}", style=palette.frozen)
        return Text("❄ frozen (not by this session)", style=palette.frozen)
    if snap.freeze is FreezeState.THAWED:
        return Text("thawed")
    return Text("unknown", style=palette.stale)


def command_reason(snap: VmSnapshot) -> str:
    """Why a command the agent offers is disabled (guest-info does not say; we infer)."""
    if snap.freeze is FreezeState.FROZEN:
        return "the agent is in frozen state"
    return "disabled by the guest's policy (qemu-ga --block-rpcs / allow-rpcs)"


def overview_text(snap: VmSnapshot, now: float, palette: Palette, hold: Hold | None = None) -> Text:
    facts = snap.facts
    text = Text()
    agent = Text(
        snap.agent.value, style=palette.ok if snap.agent is AgentState.OK else palette.error
    )
    if snap.lifecycle is not None:
        agent = Text(agent_label(snap), style=palette.accent)
        agent.append(
            f"  ({snap.lifecycle.action} sent {format_age(now - snap.lifecycle.since)} ago)",
            style=palette.stale,
        )
    if snap.last_seen is not None:
        agent.append(f"  (last answer {format_age(now - snap.last_seen)} ago)", style=palette.stale)
    if snap.error:
        agent.append("  ")
        agent.append_text(plain(snap.error, 200, style=palette.warning))
    _row(text, "Agent", agent)
    _row(text, "Hypervisor", plain(snap.ref.hypervisor, 60))
    _row(text, "Address", plain(snap.ref.address, 120))
    if snap.ref.tags:
        _row(text, "Tags", plain(", ".join(snap.ref.tags), 120))
    os_info = facts.os
    os_line = plain(os_info.pretty_name or facts.os_label if os_info else None, 80)
    if os_info and (os_info.id or os_info.machine):
        extra = " ".join(x for x in (os_info.id, os_info.machine) if x)
        os_line.append("  [")
        os_line.append_text(plain(extra, 40))
        os_line.append("]")
    _row(text, "OS", os_line)
    if os_info:
        kernel = plain(os_info.kernel_release, 60)
        if os_info.kernel_version:
            kernel.append("  ")
            kernel.append_text(plain(os_info.kernel_version, 80, style=palette.stale))
        _row(text, "Kernel", kernel)
    else:
        _row(text, "Kernel", plain(None))
    _row(text, "Hostname", plain(facts.hostname, 120))
    if facts.users is None:
        _row(text, "Users", plain(None))
    elif not facts.users:
        _row(text, "Users", Text("nobody logged in", style=palette.stale))
    else:
        users = Text()
        for i, user in enumerate(facts.users[:20]):
            if i:
                users.append(", ")
            name = user.name if not user.domain else f"{user.domain}\\{user.name}"
            users.append_text(plain(name, 60))
            if user.login_time is not None:
                users.append(f" ({format_age(now - user.login_time)})", style=palette.stale)
        if len(facts.users) > 20:
            users.append(f", … {len(facts.users) - 20} more")
        _row(text, "Users", users)
    tz = facts.timezone
    if tz is None:
        _row(text, "Timezone", plain(None))
    else:
        sign = "+" if tz.offset_s >= 0 else "-"
        hours, minutes = divmod(abs(tz.offset_s) // 60, 60)
        zone = plain(tz.zone, 60, missing="")
        zone.append(f" UTC{sign}{hours:02d}:{minutes:02d}")
        _row(text, "Timezone", zone)
    drift = facts.time_drift_s
    drift_style = palette.warning if drift is not None and abs(drift) >= 2 else Style()
    _row(text, "Time drift", Text(format_drift(drift), style=drift_style))
    _row(text, "Agent ver.", plain(facts.version, 40))
    _row(text, "Latency", format_latency(snap.latency_ms))
    _row(text, "Filesystems", freeze_text(snap, now, palette, hold))
    info = facts.info
    if info is None:
        _row(text, "Commands", plain(None))
    else:
        disabled = [c.name for c in info.commands if not c.enabled]
        commands = Text(f"{len(info.commands) - len(disabled)} enabled")
        if disabled:
            commands.append(f", {len(disabled)} disabled ", style=palette.warning)
            commands.append(f"({command_reason(snap)}): ", style=palette.stale)
            commands.append_text(plain(", ".join(disabled), 400, style=palette.warning))
        _row(text, "Commands", commands)
    return text


def agent_text(snap: VmSnapshot, palette: Palette, note: str | None = None) -> Text:
    """`note`: what the VM's channel says (an old agent's adaptation, a libvirt taint)."""
    text = Text()
    if note is not None:
        text.append(" ")
        text.append_text(plain(note, 300, style=palette.warning))
        text.append("\n")
    info = snap.facts.info
    if info is None:
        text.append(" The agent has not answered guest-info yet.", style=palette.stale)
        return text
    text.append(" qemu-ga ")
    text.append_text(plain(info.version, 40, style=Style(bold=True)))
    text.append(f" offers {len(info.commands)} commands\n")
    # Old agents (issue 12): which generation this is, and what it cannot tell us.
    text.append(" ")
    text.append("generation: ", style=palette.stale)
    text.append_text(plain(info.era, 80, style=palette.stale))
    text.append("\n")
    if not info.listed:
        text.append(" It lists no commands; these come from its version.\n", style=palette.stale)
    if info.cannot_report:
        text.append(" It cannot report: ", style=palette.warning)
        text.append_text(plain(", ".join(info.cannot_report), 200, style=palette.warning))
        text.append("\n")
    reason = command_reason(snap)
    for cmd in sorted(info.commands, key=lambda c: c.name):
        text.append("\n ")
        if cmd.enabled:
            text.append("✓ ", style=palette.ok)
            text.append_text(plain(cmd.name, 60))
        else:
            text.append("✗ ", style=palette.error)
            text.append_text(plain(cmd.name, 60, style=palette.stale))
            text.append(f"  disabled: {reason}", style=palette.warning)
        if not cmd.success_response:
            text.append("  (no reply on success)", style=palette.stale)
    return text


def nic_rates(samples: Sequence[CounterSample]) -> tuple[list[float], list[float]]:
    """Per-interval rx and tx byte rates from counter samples (counter resets skipped)."""
    rx: list[float] = []
    tx: list[float] = []
    for a, b in itertools.pairwise(samples):
        dt = b.at - a.at
        if dt <= 0 or b.rx_bytes < a.rx_bytes or b.tx_bytes < a.tx_bytes:
            continue
        rx.append((b.rx_bytes - a.rx_bytes) / dt)
        tx.append((b.tx_bytes - a.tx_bytes) / dt)
    return rx, tx


def network_text(
    snap: VmSnapshot,
    history: dict[str, list[CounterSample]],
    palette: Palette,
    *,
    sparklines: bool = True,
) -> Text:
    """Interfaces, addresses and rates; `sparklines=False` (low-bandwidth): the latest
    rate alone, a few cells that change per poll instead of 32."""
    interfaces = snap.facts.interfaces
    if interfaces is None:
        return Text(" The agent has not reported network interfaces.", style=palette.stale)
    if not interfaces:
        return Text(" No network interfaces.", style=palette.stale)
    text = Text()
    for iface in interfaces[:64]:
        if text:
            text.append("\n\n")
        text.append(" ")
        text.append_text(plain(iface.name, 24, style=Style(bold=True)))
        text.append("  ")
        text.append_text(plain(iface.mac, 24, style=palette.stale))
        for addr in iface.addresses[:32]:
            text.append("\n   ")
            text.append_text(plain(f"{addr.address}/{addr.prefix}", 60))
            text.append(f"  {addr.family}", style=palette.stale)
        rx, tx = nic_rates(history.get(iface.name, []))
        if rx:
            text.append("\n   rx ")
            if sparklines:
                text.append(f"{sparkline(rx):<16}", style=palette.ok)
            text.append(f" {format_rate(rx[-1]):>12}")
            text.append("   tx ")
            if sparklines:
                text.append(f"{sparkline(tx):<16}", style=palette.accent)
            text.append(f" {format_rate(tx[-1]):>12}")
        elif iface.stats is not None:
            text.append("\n   rx ")
            text.append(format_bytes(iface.stats.rx_bytes))
            text.append("   tx ")
            text.append(format_bytes(iface.stats.tx_bytes))
            text.append("   (rates after the next poll)", style=palette.stale)
        if iface.stats is not None and (iface.stats.rx_errs or iface.stats.tx_errs):
            text.append(
                f"\n   errors rx {iface.stats.rx_errs} tx {iface.stats.tx_errs}",
                style=palette.warning,
            )
    return text


def _bar(fraction: float, width: int, palette: Palette) -> Text:
    filled = round(fraction * width)
    style = (
        palette.error if fraction >= 0.95 else palette.warning if fraction >= 0.85 else palette.ok
    )
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style=palette.stale)
    return text


def storage_text(snap: VmSnapshot, palette: Palette) -> Text:
    facts = snap.facts
    text = Text()
    text.append(" Filesystems", style=Style(bold=True, underline=True))
    if facts.filesystems is None:
        text.append("\n  not reported", style=palette.stale)
    for fs in (facts.filesystems or ())[:128]:
        text.append("\n  ")
        text.append_text(plain(f"{fs.mountpoint:<16}", 40))
        text.append(" ")
        text.append_text(plain(f"{fs.type:<8}", 16, style=palette.stale))
        text.append(" ")
        frac = fs.used_fraction
        if frac is None:
            text.append(f"{'':20}   —  ")
        else:
            text.append_text(_bar(frac, 20, palette))
            text.append(f" {round(frac * 100):>3}%")
        text.append(f"  {format_bytes(fs.used_bytes)} / {format_bytes(fs.total_bytes)}  ")
        text.append_text(plain(", ".join(fs.devices) or fs.name, 60, style=palette.stale))
    text.append("\n\n Disks", style=Style(bold=True, underline=True))
    if facts.disks is None:
        text.append("\n  not reported", style=palette.stale)
    for disk in (facts.disks or ())[:128]:
        text.append("\n  ")
        text.append_text(plain(disk.name, 40))
        if disk.partition:
            text.append("  partition", style=palette.stale)
        if disk.alias:
            text.append("  alias ")
            text.append_text(plain(disk.alias, 40))
        if disk.dependencies:
            text.append("  on ")
            text.append_text(plain(", ".join(disk.dependencies), 80))
    return text


def live_text(history: Sequence[LiveStats], palette: Palette) -> Text:
    """CPU busy % (all vCPUs) and each disk's read / write rate over the last samples,
    as sparklines with the latest value; empty until two samples were taken. (Disk names
    are the guest's: plain text.)"""
    if not history:
        return Text()
    text = Text()
    text.append(" Live", style=Style(bold=True, underline=True))
    cpu = [h.cpu_percent for h in history if h.cpu_percent is not None]
    if cpu:
        text.append("\n  cpu    ")
        text.append(f"{sparkline(cpu):<16}", style=palette.ok)
        text.append(f" {cpu[-1]:5.1f} %")
    latest = history[-1]
    for name in sorted(latest.disk_read_bps)[:32]:
        reads = [h.disk_read_bps[name] for h in history if name in h.disk_read_bps]
        writes = [h.disk_write_bps[name] for h in history if name in h.disk_write_bps]
        text.append("\n  ")
        text.append_text(plain(f"{name:<6}", 24))
        text.append(" read ")
        text.append(f"{sparkline(reads):<16}", style=palette.ok)
        text.append(f" {format_rate(reads[-1]):>12}")
        text.append("   write ")
        text.append(f"{sparkline(writes):<16}", style=palette.accent)
        text.append(f" {format_rate(writes[-1]):>12}")
    return text


# The Admin tab: at most this many keys per user are listed (each a line).
MAX_KEYS_SHOWN = 50


def id_ranges(ids: Sequence[int]) -> str:
    """`[0, 1, 2, 5]` -> `0-2,5` (a 64-vCPU guest stays on one line)."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def admin_text(
    view: AdminView | None, palette: Palette, *, error: str | None = None, asked: bool = False
) -> Text:
    """The Admin tab: online/offline vCPUs, then each user's authorized keys as type,
    SHA256 fingerprint and comment (the key material itself is long and says nothing to
    a person; the fingerprint is what `ssh-keygen -l` prints). `error`: the read failed."""
    if error is not None:
        text = Text(" Could not read the vCPUs and SSH keys: ", style=palette.error)
        text.append_text(plain(error, 300, style=palette.error))
        return text
    if view is None:
        return Text(" Reading vCPUs and SSH keys…", style=palette.stale)
    text = Text()
    if view.vcpus is None:
        _row(text, "vCPUs", Text(f"not shown: {view.vcpus_note or 'no answer'}", palette.stale))
    else:
        online = [c.logical_id for c in view.vcpus if c.online]
        offline = [c.logical_id for c in view.vcpus if not c.online]
        fixed = [c.logical_id for c in view.vcpus if c.can_offline is False]
        _row(text, "vCPUs", f"{len(online)} of {len(view.vcpus)} online")
        if online:
            _row(text, "  online", id_ranges(online))
        if offline:
            _row(text, "  offline", Text(id_ranges(offline), style=palette.warning))
        if fixed:
            fixed_text = f"{id_ranges(fixed)} (cannot be taken offline)"
            _row(text, "  fixed", Text(fixed_text, style=palette.stale))
    text.append("\n")
    if view.keys_note is not None:
        _row(text, "SSH keys", Text(f"not shown: {view.keys_note}", style=palette.stale))
        return text
    whose = "the administrator, the logged-in users" + (" and those asked for" if asked else "")
    _row(text, "SSH keys", Text(f"authorized_keys of {whose} · u: another user", palette.stale))
    for user in view.users:
        name = plain(user.user, _LABEL, style=Style(bold=True))
        text.append("\n ")
        text.append_text(name)
        text.append(" " * max(1, _LABEL + 1 - len(name.plain)))
        if user.error is not None:
            text.append("could not read: ", style=palette.warning)
            text.append_text(plain(user.error, 200, style=palette.warning))
            continue
        if not user.keys:
            text.append("no keys", style=palette.stale)
            continue
        text.append(f"{len(user.keys)} key{'s' if len(user.keys) != 1 else ''}")
        for line in user.keys[:MAX_KEYS_SHOWN]:
            key = key_summary(line)
            text.append("\n   ")
            if key.fingerprint is None:
                text.append("not a key: ", style=palette.warning)
                text.append_text(plain(key.comment, 60, style=palette.stale))
                continue
            text.append_text(plain(key.key_type, 24))
            text.append("  ")
            text.append(key.fingerprint)
            if key.comment:
                text.append("  ")
                text.append_text(plain(key.comment, 60))
            if key.options:
                text.append("  options: ", style=palette.stale)
                text.append_text(plain(key.options, 60, style=palette.stale))
        if len(user.keys) > MAX_KEYS_SHOWN:
            text.append(f"\n   … {len(user.keys) - MAX_KEYS_SHOWN} more", style=palette.stale)
    return text
