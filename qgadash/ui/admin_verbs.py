"""The dashboard's guest administration verbs on marked VMs (or the one under the
cursor): sync the clock, set a password, list / add / remove SSH keys, show and set
vCPUs. The same rules as the CLI's (`qgadash.cli.admin`): planned (agents that lack the
command are listed as skipped, with why), Cancel first for anything the command policy
says changes a guest, read-only mode refuses those, every VM's outcome in the action
dialog, the engine's audit. An SSH key change shows each VM's diff before it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.style import Style
from rich.text import Text

from qgadash.fleet.actions import Action, ActionPlan
from qgadash.fleet.admin import (
    drift_text,
    key_diff,
    keys_text,
    parse_when,
    read_key_file,
    vcpus_text,
)
from qgadash.fleet.model import ActionResult
from qgadash.ui.admin_dialogs import PasswordScreen
from qgadash.ui.dashboard import Dashboard
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.modals import MessageScreen
from qgadash.ui.screens.modals.prompt import PromptScreen
from qgadash.ui.verbs import confirm_plan

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from qgadash.fleet.admin import Secret

__all__ = [
    "confirm_time_sync",
    "prompt_password",
    "prompt_ssh_keys",
    "prompt_time",
    "prompt_vcpus",
    "show_ssh_keys",
    "show_vcpus",
]


MAX_KEYS_SHOWN = 200  # per VM in the dialog (the guest decides how many it sends)


def _described(results: list[ActionResult], describe: Callable[[Any], str]) -> list[ActionResult]:
    """Values turned into the one line the action dialog shows per VM."""
    return [
        ActionResult(r.vm_id, r.ok, describe(r.value), r.error, r.elapsed_ms) if r.ok else r
        for r in results
    ]


def _run(
    app: Dashboard,
    title: str,
    done: str,
    plan: ActionPlan,
    work: Callable[[Callable[[ActionResult], None]], Awaitable[list[ActionResult]]],
    describe: Callable[[Any], str],
) -> None:
    async def runner(progress: Callable[[ActionResult], None]) -> list[ActionResult]:
        def shown(result: ActionResult) -> None:
            progress(_described([result], describe)[0])

        return _described(await work(shown), describe)

    app.run_guest_action(title, done, plan, runner)


# -- the clock ------------------------------------------------------------------------------


def confirm_time_sync(
    app: Dashboard, vm_ids: Sequence[str], how: str, when_ns: int | None = None
) -> None:
    """guest-set-time from the host (the guest's hardware clock, as virsh domtime --sync)
    or to `when_ns`; each VM's drift before and after."""
    if app.refuse_read_only():
        return
    plan = app.engine.plan(Action.TIME_SYNC, vm_ids)
    title = "Sync clocks from the host" if when_ns is None else "Set clocks"
    confirm_plan(
        app,
        plan,
        how,
        title,
        "Sync",
        lambda: _run(
            app,
            title,
            "synced",
            plan,
            lambda p: app.engine.admin.time_sync(plan.eligible, when_ns=when_ns, progress=p),
            drift_text,
        ),
    )


def prompt_time(app: Dashboard, vm_ids: Sequence[str], how: str) -> None:
    """The operator's time (`now`: this machine's clock, ISO 8601 or epoch seconds), then
    the same confirmation as a sync."""
    if app.refuse_read_only():
        return

    def typed(values: dict[str, str] | None) -> None:
        if not values:
            return
        try:
            when = parse_when(values["when"])
        except ValueError as exc:
            app.notify(f"Cannot read that time: {exc}", severity="error", markup=False)
            return
        confirm_time_sync(app, vm_ids, how, when)

    note = Text(
        "now: this machine's clock (qemu-ga then also writes the guest's hardware clock).",
        style=app.palette.stale,
    )
    app.push_screen(
        PromptScreen(
            f"Set the clock of {how}", [("when", "Time:", "now")], confirm="Next", note=note
        ),
        typed,
    )


# -- passwords ------------------------------------------------------------------------------


def prompt_password(app: Dashboard, vm_ids: Sequence[str], how: str) -> None:
    """User and password (twice, masked), then who gets it and who is skipped."""
    if app.refuse_read_only():
        return
    plan = app.engine.plan(Action.PASSWORD, vm_ids)

    def typed(answer: tuple[str, Secret] | None) -> None:
        if answer is None:
            return
        user, secret = answer
        title = f"Set the password of {sanitize(user, 40)}"
        confirm_plan(
            app,
            plan,
            how,
            title,
            "Set on",
            lambda: _run(
                app,
                title,
                "set",
                plan,
                lambda p: app.engine.admin.set_password(plan.eligible, user, secret, progress=p),
                lambda value: str(value or ""),
            ),
        )

    app.push_screen(PasswordScreen(f"Set a password on {how}"), typed)


# -- SSH keys -------------------------------------------------------------------------------


def show_ssh_keys(app: Dashboard, vm_ids: Sequence[str], how: str, user: str = "") -> None:
    """A user's authorized keys, per VM, in a dialog (nothing changes)."""

    def typed(values: dict[str, str] | None) -> None:
        if not values or not values["user"].strip():
            return
        app.run_worker(
            _list_keys(app, vm_ids, values["user"].strip()), group="admin", exit_on_error=False
        )

    app.push_screen(
        PromptScreen(f"SSH keys on {how}", [("user", "User:", user or "root")], confirm="Show"),
        typed,
    )


async def _list_keys(app: Dashboard, vm_ids: Sequence[str], user: str) -> None:
    plan = app.engine.plan(Action.SSH_KEYS_LIST, vm_ids)
    results = await app.engine.admin.ssh_keys(plan.eligible, user) if plan.eligible else []
    body = Text()
    for r in results:
        if body:
            body.append("\n")
        body.append_text(plain(r.vm_id, 80, style=Style(bold=True)))
        if not r.ok:
            body.append("  ")
            body.append_text(plain(r.error or "failed", 300, style=app.palette.error))
            continue
        body.append(f"  ({keys_text(r.value)})", style=app.palette.stale)
        for key in r.value[:MAX_KEYS_SHOWN]:
            body.append("\n  ")
            body.append_text(plain(key, 300))
        if len(r.value) > MAX_KEYS_SHOWN:
            body.append(f"\n  … {len(r.value) - MAX_KEYS_SHOWN} more", style=app.palette.stale)
    _skipped(body, plan, app)
    app.push_screen(MessageScreen(f"SSH keys of {sanitize(user, 40)}", body, safe="Close"))


def _skipped(body: Text, plan: ActionPlan, app: Dashboard) -> None:
    for vm_id, why in plan.skipped:
        if body:
            body.append("\n")
        body.append_text(plain(vm_id, 80, style=Style(bold=True)))
        body.append("  skipped: ", style=app.palette.warning)
        body.append_text(plain(why, 200, style=app.palette.warning))


def prompt_ssh_keys(app: Dashboard, vm_ids: Sequence[str], how: str, *, remove: bool) -> None:
    """A user and the public keys (one per line), then each VM's diff, then the change."""
    if app.refuse_read_only():
        return

    def typed(values: dict[str, str] | None) -> None:
        if not values:
            return
        user = values["user"].strip()
        keys = read_key_file(values["keys"].replace("\\n", "\n"))
        if not user or not keys:
            app.notify("A user and at least one public key are needed.", markup=False)
            return
        app.run_worker(
            _show_diff(app, vm_ids, how, user, keys, remove), group="admin", exit_on_error=False
        )

    verb = "Remove" if remove else "Add"
    app.push_screen(
        PromptScreen(
            f"{verb} SSH keys on {how}",
            [("user", "User:", "root"), ("keys", "Public key:", "")],
            confirm="Next",
            note=Text("One key, or several separated by \\n.", style=app.palette.stale),
        ),
        typed,
    )


async def _show_diff(
    app: Dashboard,
    vm_ids: Sequence[str],
    how: str,
    user: str,
    keys: list[str],
    remove: bool,
) -> None:
    action = Action.SSH_KEYS_REMOVE if remove else Action.SSH_KEYS_ADD
    plan = app.engine.plan(action, vm_ids)
    current = await app.engine.admin.ssh_keys(plan.eligible, user) if plan.eligible else []
    body = Text()
    for r in current:
        if body:
            body.append("\n")
        body.append_text(plain(r.vm_id, 80, style=Style(bold=True)))
        if not r.ok:
            body.append("  cannot read the keys: ", style=app.palette.error)
            body.append_text(plain(r.error or "", 200, style=app.palette.error))
            continue
        change = key_diff(r.value, keys, remove=remove)
        if not change.added and not change.removed:
            body.append("  no change", style=app.palette.stale)
        for key in change.added:
            body.append("\n  + ", style=app.palette.ok)
            body.append_text(plain(key, 300))
        for key in change.removed:
            body.append("\n  - ", style=app.palette.error)
            body.append_text(plain(key, 300))
    _skipped(body, plan, app)
    verb = "Remove keys" if remove else "Add keys"
    title = f"{verb} of {sanitize(user, 40)} on {how}"

    def answered(yes: bool | None) -> None:
        if yes and plan.eligible:
            _run(
                app,
                title,
                "changed",
                plan,
                lambda p: app.engine.admin.ssh_keys_change(
                    plan.eligible, user, keys, remove=remove, progress=p
                ),
                keys_text,
            )

    app.push_screen(
        MessageScreen(title, body, safe="Cancel", risky=verb if plan.eligible else None),
        answered,
    )


# -- vCPUs ----------------------------------------------------------------------------------


def show_vcpus(app: Dashboard, vm_ids: Sequence[str], how: str) -> None:
    """Online and offline vCPUs per VM (nothing changes)."""
    plan = app.engine.plan(Action.VCPUS, vm_ids)
    _run(
        app,
        f"vCPUs of {how}",
        "read",
        plan,
        lambda p: app.engine.admin.vcpus(plan.eligible, progress=p),
        vcpus_text,
    )


def prompt_vcpus(app: Dashboard, vm_ids: Sequence[str], how: str) -> None:
    """How many vCPUs stay online (the lowest ids), then who gets it, Cancel first."""
    if app.refuse_read_only():
        return

    def typed(values: dict[str, str] | None) -> None:
        if not values:
            return
        text = values["count"].strip()
        if not text.isdigit() or int(text) < 1:
            app.notify("A number of vCPUs, at least 1.", severity="error", markup=False)
            return
        online = int(text)
        plan = app.engine.plan(Action.VCPUS_SET, vm_ids)
        title = f"Keep {online} vCPU{'s' if online != 1 else ''} online"
        confirm_plan(
            app,
            plan,
            how,
            title,
            "Set on",
            lambda: _run(
                app,
                title,
                "set",
                plan,
                lambda p: app.engine.admin.set_vcpus(plan.eligible, online, progress=p),
                vcpus_text,
            ),
        )

    app.push_screen(
        PromptScreen(f"vCPUs online on {how}", [("count", "Online:", "1")], confirm="Next"),
        typed,
    )
