"""Dashboard verbs beyond freeze, thaw and power: exec on marked VMs (its output per
VM), fstrim, a raw agent command, removing a lifecycle row, screenshots.

Each is a function of the app (as `Dashboard`): it asks (Cancel first for anything that changes a
guest), then runs through the engine as an app worker and shows every VM's outcome.
The rules are the CLI's: read-only mode allows only what cannot change a guest
(`qgadash.agent.policy`); a raw freeze is the freeze dialog, deadline and keepers
included.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text

from qgadash.agent.policy import changes_guest, command_policy
from qgadash.fleet.actions import Action, ActionPlan, ReadOnlyError
from qgadash.ui import messages
from qgadash.ui.dashboard import Dashboard
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.screens.modals import ConfirmActionScreen, FreezeChoice, MessageScreen
from qgadash.ui.screens.modals.prompt import PromptScreen

__all__ = [
    "confirm_fstrim",
    "confirm_plan",
    "forget",
    "json_text",
    "prompt_agent_command",
    "prompt_exec",
    "take_screenshot",
]


def confirm_plan(
    app: Dashboard,
    plan: ActionPlan,
    how: str,
    title: str,
    verb: str,
    then: Callable[[], None],
) -> None:
    """`then()` once the operator confirms `plan` (Cancel first; nothing when no VM is
    eligible), or at once when the command policy says it cannot change a guest."""
    def confirmed(choice: FreezeChoice | None) -> None:
        if choice is not None and plan.eligible:
            then()

    if not command_policy(plan.action.command).changes_guest:
        then()  # the policy says it cannot change the guest: nothing to confirm
        return
    app.push_screen(
        ConfirmActionScreen(title=title, verb=verb, plan=plan, how=how, palette=app.palette),
        confirmed,
    )


def confirm_fstrim(app: Dashboard, vm_ids: Sequence[str], how: str) -> None:
    """fstrim (discard unused blocks): who gets it, who is skipped, Cancel first."""
    if app.refuse_read_only():
        return
    plan = app.engine.plan(Action.FSTRIM, vm_ids)
    confirm_plan(
        app,
        plan,
        how,
        "Trim filesystems (fstrim)",
        "Trim",
        lambda: app.run_guest_action(
            "Trim filesystems",
            "trimmed",
            plan,
            lambda progress: app.engine.fstrim(plan.eligible, progress=progress),
        ),
    )


def prompt_exec(app: Dashboard, vm_ids: Sequence[str], how: str, command: str = "") -> None:
    """Exec on the marked VMs: the command line, then a confirmation (Cancel first)
    naming who runs it and who is skipped, then every VM's exit code and output."""
    if app.refuse_read_only():
        return

    def typed(values: dict[str, str] | None) -> None:
        if not values:
            return
        try:
            argv = shlex.split(values["command"])
        except ValueError as exc:
            app.notify(f"Cannot read that command: {exc}", severity="error", markup=False)
            return
        if argv:
            _confirm_exec(app, vm_ids, how, argv)

    note = Text(
        "Runs through guest-exec in each guest, not in a shell: sh -c '…' for pipes.",
        style=app.palette.stale,
    )
    app.push_screen(
        PromptScreen(
            f"Run a command on {how}", [("command", "Command:", command)], confirm="Next", note=note
        ),
        typed,
    )


def _confirm_exec(app: Dashboard, vm_ids: Sequence[str], how: str, argv: list[str]) -> None:
    plan = app.engine.plan(Action.EXEC, vm_ids)
    title = f"Run: {sanitize(shlex.join(argv), 80)}"
    confirm_plan(
        app,
        plan,
        how,
        title,
        "Run on",
        lambda: app.run_guest_action(
            title,
            "ran",
            plan,
            lambda progress: app.engine.exec(plan.eligible, argv, progress=progress),
            output=True,
        ),
    )


def prompt_agent_command(app: Dashboard, vm_id: str) -> None:
    """Any agent command on one VM, raw (the CLI's `agent`)."""

    def typed(values: dict[str, str] | None) -> None:
        if not values or not values["name"].strip():
            return
        raw = values["arguments"].strip()
        args: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                app.notify(f"Arguments are not JSON: {exc}", severity="error", markup=False)
                return
            if not isinstance(parsed, dict):
                app.notify("Arguments must be a JSON object.", severity="error", markup=False)
                return
            args = parsed
        agent_command(app, vm_id, values["name"].strip(), args)

    note = Text("guest-info lists the commands the agent offers.", style=app.palette.stale)
    if app.read_only:
        note.append(" READ-ONLY: only those that cannot change the guest.")
    app.push_screen(
        PromptScreen(
            f"Agent command on {sanitize(vm_id, 60)}",
            [("name", "Command:", "guest-info"), ("arguments", "JSON arguments:", "")],
            confirm="Next",
            note=note,
        ),
        typed,
    )


def agent_command(app: Dashboard, vm_id: str, name: str, args: dict[str, Any] | None) -> None:
    """Send it: refused in read-only mode if it may change the guest, confirmed first if
    it may, through the freeze dialog if it is a freeze; then its reply in a dialog."""
    shown = sanitize(name, 60)
    if app.read_only and changes_guest(name, args):
        app.notify(
            f"READ-ONLY: {shown} may change the guest; not sent.", severity="warning", markup=False
        )
        return
    if command_policy(name).freeze:
        # its deadline and keepers come with it
        app.post_message(messages.ConfirmFreeze([vm_id], "this VM"))
        return
    if not changes_guest(name, args):
        app.run_worker(_send(app, vm_id, name, args), group="agent", exit_on_error=False)
        return
    body = Text()
    body.append_text(plain(name, 60, style=Style(bold=True)))
    body.append(" may change ")
    body.append_text(plain(vm_id, 60, style=Style(bold=True)))
    if args:
        body.append(" (arguments ")
        body.append_text(plain(json.dumps(args), 300))
        body.append(")")
    body.append(".")

    def answered(yes: bool | None) -> None:
        if yes:
            app.run_worker(_send(app, vm_id, name, args), group="agent", exit_on_error=False)

    app.push_screen(
        MessageScreen(f"Send {shown}?", body, safe="Cancel", risky=f"Send {shown}"), answered
    )


async def _send(app: Dashboard, vm_id: str, name: str, args: dict[str, Any] | None) -> None:
    try:
        result = await app.engine.agent_command(vm_id, name, args)
    except (ReadOnlyError, ValueError) as exc:
        app.notify(sanitize(str(exc), 300), severity="error", markup=False)
        return
    if result.ok:
        body = json_text(result.value)
    else:
        body = plain(result.error or "failed", 2000, style=app.palette.error)
    outcome = "ok" if result.ok else "unknown" if result.ok is None else "failed"
    title = f"{sanitize(name, 50)} on {sanitize(vm_id, 50)}: {outcome}"
    app.push_screen(MessageScreen(title, body, safe="Close"))


def json_text(value: object, max_lines: int = 2000) -> Text:
    """An agent's reply, pretty-printed, every line of it made safe to show."""
    try:
        shown = json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    lines = shown.split("\n")
    text = Text()
    for i, line in enumerate(lines[:max_lines]):
        if i:
            text.append("\n")
        text.append_text(plain(line, 400))
    if len(lines) > max_lines:
        text.append(f"\n… {len(lines) - max_lines} more lines")
    return text


def forget(app: Dashboard, vm_id: str) -> None:
    """Remove the row of a VM this session shut down or suspended."""

    async def work() -> None:
        if await app.engine.forget(vm_id):
            app.notify(f"{sanitize(vm_id, 80)}: row removed", markup=False)

    app.run_worker(work(), group="forget", exit_on_error=False)


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qgadash"


def take_screenshot(app: Dashboard, directory: Path | None = None) -> Path | None:
    """An SVG of the screen in `directory` (default: the current directory, else the
    state directory); the notification says where, or why it could not."""
    places = [directory] if directory else [Path.cwd(), _state_dir() / "screenshots"]
    errors = []
    for place in places:
        try:
            place.mkdir(parents=True, exist_ok=True)
            path = Path(app.save_screenshot(path=str(place)))
        except OSError as exc:
            errors.append(f"{place}: {exc.strerror or exc}")
            continue
        app.notify(f"Screenshot saved to {path}", markup=False, timeout=10)
        return path
    app.notify(
        "Screenshot not saved: " + "; ".join(errors), severity="error", markup=False, timeout=15
    )
    return None
