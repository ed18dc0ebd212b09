"""The command palette's fleet entries: what can be done right now, in words.

"Freeze 12 marked VMs", "Thaw all frozen", "Open files of web-1", jump to any VM. In
read-only mode no entry that changes a guest is offered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.message import Message

from qgadash.fleet.model import FreezeState
from qgadash.ui import admin_verbs, messages, verbs
from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.fleet_view import COLUMNS, SORTABLE
from qgadash.ui.plain import sanitize
from qgadash.ui.screens.fleet import FleetScreen

__all__ = ["FleetCommands", "PaletteEntry", "palette_entries"]

MAX_JUMP_HITS = 50


@dataclass(frozen=True, slots=True)
class PaletteEntry:
    name: str
    run: Callable[[], object]
    help: str
    changes_guests: bool = False


def _post(app: Dashboard, kind: Callable[..., Message], *args: object) -> None:
    """Ask the app for a screen or a flow, as screens do (ui/messages.py)."""
    app.post_message(kind(*args))


def _vms(n: int) -> str:
    return f"{n} VM{'s' if n != 1 else ''}"


def _marked(n: int) -> str:
    return f"{n} marked VM{'s' if n != 1 else ''}"


def palette_entries(app: Dashboard) -> list[PaletteEntry]:
    """The context actions for the palette, given the app's state now."""
    fleet = app.screen_stack[0]  # the fleet: the app's default screen, under the others
    assert isinstance(fleet, FleetScreen)
    store = app.engine.store
    entries: list[PaletteEntry] = []
    marks = sorted(fleet.marks)
    cursor = fleet.table.cursor_vm if fleet.live else None
    frozen = sorted(s.id for s in store.snapshots() if s.freeze is FreezeState.FROZEN)
    owned = sorted(app.engine.frozen_by_us())

    if marks:
        how = f"{len(marks)} marked VM{'s' if len(marks) != 1 else ''}"
        entries += [
            PaletteEntry(
                f"Freeze {_marked(len(marks))}",
                partial(_post, app, messages.ConfirmFreeze, marks, how),
                "freeze filesystems, with a thaw deadline",
                True,
            ),
            PaletteEntry(
                f"Thaw {_marked(len(marks))}",
                partial(_post, app, messages.ConfirmThaw, marks, how),
                "thaw filesystems",
                True,
            ),
            PaletteEntry(
                f"Power: shutdown or suspend {_marked(len(marks))}",
                partial(_post, app, messages.OpenPower, marks, how),
                "power menu",
                True,
            ),
            PaletteEntry(
                f"Run a command on {_marked(len(marks))}",
                partial(verbs.prompt_exec, app, marks, how),
                "guest-exec; every VM's exit code and output",
                True,
            ),
            PaletteEntry(
                f"Trim filesystems (fstrim) of {_marked(len(marks))}",
                partial(verbs.confirm_fstrim, app, marks, how),
                "discard unused blocks",
                True,
            ),
            *admin_entries(app, marks, how, _marked(len(marks))),
            PaletteEntry(
                f"Unmark all ({len(marks)})", fleet.action_clear_marks, "asks if some are hidden"
            ),
        ]
    if frozen:
        entries.append(
            PaletteEntry(
                f"Thaw all frozen ({_vms(len(frozen))})",
                partial(
                    _post, app, messages.ConfirmThaw, frozen, f"all {_vms(len(frozen))} frozen"
                ),
                "every VM whose filesystems are frozen",
                True,
            )
        )
    if owned and owned != frozen:
        entries.append(
            PaletteEntry(
                f"Thaw what this session froze ({_vms(len(owned))})",
                partial(_post, app, messages.ConfirmThaw, owned, "the VMs this session froze"),
                "VMs with a thaw deadline",
                True,
            )
        )
    if cursor is not None:
        name = sanitize(cursor, 60)
        entries += [
            PaletteEntry(
                f"Open files of {name}",
                partial(_post, app, messages.OpenFiles, cursor),
                "files pane",
            ),
            PaletteEntry(
                f"Details of {name}",
                partial(_post, app, messages.OpenDetails, cursor),
                "detail tabs",
            ),
            PaletteEntry(
                f"Freeze {name}",
                partial(_post, app, messages.ConfirmFreeze, [cursor], "this VM"),
                "freeze its filesystems",
                True,
            ),
            PaletteEntry(
                f"Thaw {name}",
                partial(_post, app, messages.ConfirmThaw, [cursor], "this VM"),
                "thaw its filesystems",
                True,
            ),
            PaletteEntry(
                f"Power: shutdown or suspend {name}",
                partial(_post, app, messages.OpenPower, [cursor], "this VM"),
                "power menu",
                True,
            ),
            PaletteEntry(
                f"Run a command on {name}",
                partial(verbs.prompt_exec, app, [cursor], "this VM"),
                "guest-exec; exit code and output",
                True,
            ),
            PaletteEntry(
                f"Trim filesystems (fstrim) of {name}",
                partial(verbs.confirm_fstrim, app, [cursor], "this VM"),
                "discard unused blocks",
                True,
            ),
            *admin_entries(app, [cursor], "this VM", name),
            # Not `changes_guests`: read-only mode offers it for read-only commands.
            PaletteEntry(
                f"Agent command on {name}…",
                partial(verbs.prompt_agent_command, app, cursor),
                "any qemu-ga command, raw (guest-info lists them)",
            ),
        ]
        snap = store.get(cursor)
        if snap is not None and snap.lifecycle is not None:
            entries.append(
                PaletteEntry(
                    f"Remove the row of {name} ({snap.lifecycle.label})",
                    partial(verbs.forget, app, cursor),
                    "it comes back by itself when its agent answers",
                )
            )
        if snap is not None and snap.thaw_error:
            entries.append(
                PaletteEntry(
                    f"Dismiss the failed thaw of {name}",
                    partial(_post, app, messages.DismissThawError, cursor),
                    "stop showing it in red",
                    True,
                )
            )
    entries += [
        PaletteEntry("Mark all shown VMs", fleet.action_mark_all, "space marks one"),
        PaletteEntry(
            "Show all VMs" if fleet.faults_only else "Show faults only",
            fleet.action_faults,
            "agents not answering, failed thaws",
        ),
        PaletteEntry("Clear the filter", partial(fleet.set_filter, ""), "show every VM"),
    ]
    for column in COLUMNS:
        if not column.optional:
            continue
        shown = column.key in app.optional_columns
        polled = "guest-get-cpustats" if column.key == "cpu" else "guest-get-diskstats"
        entries.append(
            PaletteEntry(
                f"{'Hide' if shown else 'Show'} the {column.label} column",
                partial(app.show_column, column.key, not shown),
                "stops polling " + polled
                if shown
                else f"asks {polled} on every poll of every VM while shown",
            )
        )
    for key in SORTABLE:
        column = next(c for c in COLUMNS if c.key == key)
        if column.optional and key not in app.optional_columns:
            continue
        entries.append(
            PaletteEntry(
                f"Sort by {column.label}",
                partial(fleet.sort_by, key, column.descending_first),
                f"Shift+{column.sort_letter}; again: the other way",
            )
        )
    if app.read_only:
        entries = [e for e in entries if not e.changes_guests]
    return entries


def admin_entries(app: Dashboard, ids: Sequence[str], how: str, what: str) -> list[PaletteEntry]:
    """Guest administration (qgadash.ui.admin_verbs) on `ids`, named `what`."""
    return [
        PaletteEntry(
            f"Sync the clock of {what}",
            partial(admin_verbs.confirm_time_sync, app, ids, how),
            "guest-set-time from the host; drift before and after",
            True,
        ),
        PaletteEntry(
            f"Set the clock of {what}…",
            partial(admin_verbs.prompt_time, app, ids, how),
            "guest-set-time to now or a given time; drift before and after",
            True,
        ),
        PaletteEntry(
            f"Set a password on {what}…",
            partial(admin_verbs.prompt_password, app, ids, how),
            "guest-set-user-password; never shown or logged",
            True,
        ),
        PaletteEntry(
            f"SSH keys on {what}…",
            partial(admin_verbs.show_ssh_keys, app, ids, how),
            "a user's authorized keys, per VM",
        ),
        PaletteEntry(
            f"Add SSH keys on {what}…",
            partial(admin_verbs.prompt_ssh_keys, app, ids, how, remove=False),
            "each VM's diff first",
            True,
        ),
        PaletteEntry(
            f"Remove SSH keys on {what}…",
            partial(admin_verbs.prompt_ssh_keys, app, ids, how, remove=True),
            "each VM's diff first",
            True,
        ),
        PaletteEntry(
            f"vCPUs of {what}",
            partial(admin_verbs.show_vcpus, app, ids, how),
            "online and offline, per VM",
        ),
        PaletteEntry(
            f"Set online vCPUs of {what}…",
            partial(admin_verbs.prompt_vcpus, app, ids, how),
            "guest-set-vcpus; the lowest ids stay online",
            True,
        ),
    ]


def _highlight(matcher_query: str, candidate: str, score_offsets: Sequence[int]) -> Content:
    """Like Matcher.highlight, but never reads the candidate as markup."""
    content = Content(candidate)
    for offset in score_offsets:
        if offset < len(candidate) and not candidate[offset].isspace():
            content = content.stylize("reverse", offset, offset + 1)
    return content


class FleetCommands(Provider):
    @property
    def qapp(self) -> Dashboard:
        return dashboard_of(self.app)

    async def discover(self) -> Hits:
        for entry in palette_entries(self.qapp):
            yield DiscoveryHit(Content(entry.name), entry.run, text=entry.name, help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in palette_entries(self.qapp):
            score, offsets = matcher.fuzzy_search.match(query, entry.name)
            if score > 0:
                yield Hit(
                    score,
                    _highlight(query, entry.name, offsets),
                    entry.run,
                    text=entry.name,
                    help=entry.help,
                )
        jumps = 0
        for vm_id in self.qapp.engine.store.ids():
            candidate = f"Jump to {sanitize(vm_id, 80)}"
            score, offsets = matcher.fuzzy_search.match(query, candidate)
            if score > 0:
                yield Hit(
                    score * 0.9,
                    _highlight(query, candidate, offsets),
                    partial(_post, self.qapp, messages.JumpTo, vm_id),
                    text=candidate,
                    help="move the cursor",
                )
                jumps += 1
                if jumps >= MAX_JUMP_HITS:
                    break
