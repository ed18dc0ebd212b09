"""The dashboard application: wires the engine's store to the screens, runs actions as
workers, and refuses to leave guests frozen behind it.

The CLI builds a `FleetEngine` and calls `run_dashboard`. The app starts the engine on
mount and stops it (which thaws what this process froze) before it exits.

Over 500 lines because it is the ui's composition root: the one place that pushes
screens, so every flow a screen asks for by Message (freeze, thaw and power dialogs and
their outcomes) and the whole quitting path (holds, thaw failures, signals) end here.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import Worker

from qgadash.fleet.actions import VSS_FREEZE_LIMIT, freeze_deadline
from qgadash.fleet.model import ActionResult
from qgadash.fleet.signals import SignalWatch, say
from qgadash.fleet.tuning import settle_garbage_collector
from qgadash.ui import bindings, messages, verbs
from qgadash.ui.commands import FleetCommands
from qgadash.ui.dashboard import Dashboard
from qgadash.ui.driver import TerminalSafeDriver, terminal_gone
from qgadash.ui.engine_api import Action, ActionPlan, Engine, ReadOnlyError
from qgadash.ui.fleet_view import OPTIONAL_COLUMNS, Palette
from qgadash.ui.plain import plain, sanitize
from qgadash.ui.preferences import (
    DisplaySettings,
    load_display,
    load_theme,
    save_columns,
    save_theme,
)
from qgadash.ui.screens.detail import DetailScreen
from qgadash.ui.screens.files import FilesScreen
from qgadash.ui.screens.fleet import FleetScreen
from qgadash.ui.screens.help import HelpScreen, JumpScreen
from qgadash.ui.screens.modals import (
    POWER_OPTIONS,
    ActionRunScreen,
    ConfirmActionScreen,
    FreezeChoice,
    MessageScreen,
    PowerChoice,
    PowerScreen,
    QuitScreen,
)
from qgadash.ui.themes import (
    DEFAULT_THEME,
    THEME_VARIABLE_DEFAULTS,
    load_themes,
    palette_from_variables,
)

__all__ = ["QgadashApp", "run_dashboard"]

Clock = Callable[[], float]
TICK_SECONDS = 0.25  # countdowns and ages on screen
BATCH_SECONDS = 0.05  # store changes are gathered this long, then drawn in one batch
GC_FREEZE_AFTER = 5.0  # seconds after start: the fleet is discovered and drawn by then
STOP_RETRY_BUDGET = 20.0  # seconds a thaw on a stop signal is retried


class QgadashApp(App[int]):
    """`QgadashApp(engine, config_label=..., theme=...)`; `clock` and `user_theme_dir` are
    for tests (a fixed clock makes snapshots deterministic)."""

    TITLE = "qgadash"
    CSS_PATH: ClassVar = [
        "app.tcss",
        "screens/fleet.tcss",
        "screens/detail.tcss",
        "screens/files.tcss",
    ]
    COMMANDS: ClassVar = App.COMMANDS | {FleetCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = list(bindings.APP)

    def __init__(
        self,
        engine: Engine,
        *,
        config_label: str = "",
        theme: str | None = None,
        clock: Clock = time.time,
        user_theme_dir: Path | None = None,
        start_engine: bool = True,
        display: DisplaySettings | None = None,
    ) -> None:
        super().__init__()
        # How it draws (frame cap, low-bandwidth); the colour depth was set before
        # Textual was imported (qgadash.cli).
        self.display_settings = display if display is not None else load_display()
        self.engine = engine
        # The fleet table's optional columns (CPU %, DISK I/O) and the polling they need.
        self.optional_columns: frozenset[str] = frozenset(self.display_settings.columns)
        self._poll_for_columns()
        self.config_label = config_label
        self.clock = clock
        self.palette = Palette()
        self.keymap: dict[str, str] = dict(engine.settings.keys)
        self._start_engine = start_engine
        self._stopped = False
        self._engine_stop: asyncio.Task[list[ActionResult]] | None = None
        self.signal_watch: SignalWatch | None = None  # set by run_app
        self._quitting = False
        self._refresh_pending = False
        self._unsubscribe: Callable[[], None] | None = None
        self._journal_worker: Worker[None] | None = None
        self.fleet = FleetScreen()
        themes, self.theme_errors = load_themes(user_theme_dir)
        self.theme_errors.extend(self.display_settings.errors)
        for t in themes.values():
            self.register_theme(t)
        # --theme, else the theme last chosen in the dashboard, else hosts.toml's.
        wanted = theme or load_theme() or engine.settings.theme or DEFAULT_THEME
        if wanted not in self.available_themes:
            self.theme_errors.append(
                f"theme {wanted!r} not found; themes: {', '.join(sorted(themes))}"
            )
            wanted = DEFAULT_THEME if DEFAULT_THEME in self.available_themes else "textual-dark"
        self.theme = wanted
        if self.keymap:
            self.set_keymap(self.keymap)

    # -- state ------------------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        return bool(self.engine.settings.read_only)

    @property
    def settling_journal(self) -> bool:
        """Whether the holds an earlier qgadash left are being settled (the header says so)."""
        worker = self._journal_worker
        return worker is not None and not worker.is_finished

    def _poll_for_columns(self) -> None:
        shown = self.optional_columns
        self.engine.poll_stats(cpu="cpu" in shown, disks="io" in shown)

    def show_column(self, key: str, shown: bool) -> None:
        """Turn an optional fleet column on or off: the table, what every poll asks, and
        dashboard.json (remembered for the next start)."""
        columns = set(self.optional_columns)
        if shown:
            columns.add(key)
        else:
            columns.discard(key)
        self.optional_columns = frozenset(columns)
        self._poll_for_columns()
        if self.fleet.is_mounted:
            self.fleet.table.show_optional(self.optional_columns)
        why = save_columns([k for k in OPTIONAL_COLUMNS if k in columns])
        if why is not None:
            self.notify(f"Columns not remembered: {why}", severity="warning", markup=False)

    def key_for(self, binding_id: str, default: str) -> str:
        return self.keymap.get(binding_id, default).split(",")[0]

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(THEME_VARIABLE_DEFAULTS)

    def get_driver_class(self) -> type[Driver]:
        driver = super().get_driver_class()
        return TerminalSafeDriver if driver is LinuxDriver else driver

    def get_default_screen(self) -> Screen[None]:
        return self.fleet

    def _theme_changed(self, theme: Theme) -> None:
        why = save_theme(theme.name)  # remembered for the next start
        if why is not None:
            self.notify(f"Theme not remembered: {why}", severity="warning", markup=False)
        self.palette = palette_from_variables(self.get_css_variables())
        if self.fleet.live:
            self.fleet.redraw()
        screen = self.screen
        if isinstance(screen, DetailScreen):
            screen.redraw()

    # -- lifecycle -------------------------------------------------------------------------

    async def on_mount(self) -> None:
        if self.signal_watch is not None:
            # Again, from inside the app: a handler runs in the context it was installed
            # in, and the engine stop it starts must see the app (its timers need it).
            self.signal_watch.install()
        self.palette = palette_from_variables(self.get_css_variables())
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._unsubscribe = self.engine.store.subscribe(self._store_changed)
        self.set_interval(TICK_SECONDS, self._tick)
        if not self.is_headless:
            self.set_timer(GC_FREEZE_AFTER, settle_garbage_collector)
        for error in self.theme_errors:
            self.notify(error, severity="warning", markup=False, timeout=10)
        if self.fleet.live:
            self.fleet.redraw()
        if self._start_engine:
            self._journal_worker = self.run_worker(
                self._settle_journal(), group="journal", exit_on_error=False
            )
            try:
                await self.engine.start()
            except Exception as exc:
                self.notify(
                    f"The fleet engine did not start: {sanitize(str(exc), 300)}",
                    severity="error",
                    markup=False,
                    timeout=30,
                )
        self._refresh()

    async def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if not self._stopped:
            self._stopped = True
            await self.stop_engine("quit")

    def stop_engine(self, reason: str) -> asyncio.Task[list[ActionResult]]:
        """Stop the engine (which thaws) once; every caller waits on the same stop.

        A task of the running loop, not of a widget: it finishes even while Textual
        itself shuts down (a signal, the terminal gone).
        """
        if self._engine_stop is None:
            self._engine_stop = asyncio.get_running_loop().create_task(
                self.engine.stop(reason, STOP_RETRY_BUDGET if reason != "quit" else 0.0),
                name="engine-stop",
            )
        return self._engine_stop

    def _exit_with(self, code: int) -> None:
        """Exit with `code` as the process's status (Textual's `exit(result)` alone
        leaves the return code 0)."""
        self.exit(code, return_code=code)

    def stop_for_signal(self, reason: str) -> None:
        """A stop signal (terminal closed, kill, Ctrl-C from outside): thaw and exit, no
        dialog: nobody may be there to answer it."""
        self._quitting = True
        stopping = self.stop_engine(reason)
        stopping.add_done_callback(lambda _task: self._exit_with(1 if _failed(stopping) else 0))

    async def _settle_journal(self) -> None:
        """Holds an earlier qgadash left (killed, crashed): thawed now if overdue."""
        for s in await self.engine.settle_journal():
            vm = sanitize(s.vm_id, 80)
            if s.outcome == "failed":
                self.notify(
                    f"Could not thaw {vm}, owed by an earlier qgadash: {sanitize(s.detail, 200)}",
                    severity="error",
                    markup=False,
                    timeout=60,
                )
            elif s.outcome != "pending":
                self.notify(f"{vm}: {s.outcome} (owed by an earlier qgadash)", markup=False)

    def _store_changed(self) -> None:
        # Gathered for a frame's time: at most `frame_rate` data-driven frames a second
        # (key presses are drawn as they come).
        if not self._refresh_pending:
            self._refresh_pending = True
            self.set_timer(max(BATCH_SECONDS, 1 / self.display_settings.frame_rate), self._refresh)

    def _refresh(self) -> None:
        """Apply everything the store changed since the last look, in one batch."""
        self._refresh_pending = False
        changed, removed, hypervisors = self.engine.store.take_changes()
        if not (changed or removed or hypervisors):
            return
        with self.batch_update():
            if self.fleet.live:
                self.fleet.apply_changes(changed, removed, hypervisors)
            screen = self._top_screen()
            if isinstance(screen, DetailScreen | FilesScreen):
                screen.fleet_changed(changed, removed)

    def _top_screen(self) -> Screen[object] | None:
        """The active screen, or None while the app starts or shuts down."""
        stack = self.screen_stack
        return stack[-1] if stack else None

    def _tick(self) -> None:
        with self.batch_update():
            if self.fleet.live:
                self.fleet.tick()
            screen = self._top_screen()
            if isinstance(screen, DetailScreen):
                screen.tick()

    # -- keys, palette, screenshots --------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        """Keys are routed to the focused widget as they arrive, but a binding runs only
        once its key has been through that widget's queue: keys typed right behind `/`
        (a paste, a laggy link) were routed to the table and ran fleet shortcuts. So the
        filter key is taken here, in arrival order, and the filter focused at once."""
        if isinstance(event, events.Key) and not event.is_forwarded and self._opens_filter(event):
            return
        await super().on_event(event)

    def _opens_filter(self, event: events.Key) -> bool:
        fleet = self.fleet
        if self._top_screen() is not fleet or not fleet.live or fleet.focused is not fleet.table:
            return False
        keys = [k.strip() for k in self.keymap.get("filter", "slash").split(",")]
        if event.key not in keys:
            return False
        fleet.open_filter()
        return True

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's, with "Keys" opening our help (keys and legend: one entry, not two)
        and "Screenshot" saying where it saved or why it could not."""
        for command in super().get_system_commands(screen):
            if command.title == "Keys":
                yield SystemCommand(
                    "Keys", "Every key, and what the columns and symbols mean", self.action_help
                )
            elif command.title == "Screenshot":
                yield SystemCommand(
                    "Screenshot",
                    "Save an SVG screenshot of the screen (the path is shown)",
                    lambda: self.set_timer(0.1, lambda: verbs.take_screenshot(self)),
                )
            else:
                yield command

    # -- navigation -------------------------------------------------------------------------

    def open_details(self, vm_id: str, tab: str = "overview") -> None:
        self.push_screen(DetailScreen(vm_id, tab))

    def open_files(self, vm_id: str) -> None:
        self.push_screen(FilesScreen(vm_id))

    def open_jump(self) -> None:
        def jumped(vm_id: str | None) -> None:
            if vm_id is not None:
                self.jump_to(vm_id)

        self.push_screen(JumpScreen(self.engine.store.ids()), jumped)

    def jump_to(self, vm_id: str) -> None:
        while isinstance(self.screen, DetailScreen | FilesScreen):
            self.pop_screen()
        if not self.fleet.jump_to(vm_id):
            self.notify(f"No VM {sanitize(vm_id, 80)}", severity="warning", markup=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- actions on guests ------------------------------------------------------------------

    def refuse_read_only(self) -> bool:
        if self.read_only:
            self.notify("READ-ONLY: actions are off.", severity="warning", markup=False)
            return True
        return False

    def run_guest_action(
        self,
        title: str,
        done_word: str,
        plan: ActionPlan,
        runner: Callable[[Callable[[ActionResult], None]], object],
        *,
        output: bool = False,
    ) -> None:
        """Run an action as a worker, its progress and every VM's outcome in a dialog;
        `output`: with a pane of what each VM's command printed (exec)."""

        def finished(results: list[ActionResult]) -> None:
            ok = sum(1 for r in results if r.ok)
            bad = len(results) - ok
            message = f"{title}: {ok} {done_word}" + (f", {bad} failed or unknown" if bad else "")
            self.notify(message, severity="error" if bad else "information", markup=False)

        self.push_screen(
            ActionRunScreen(
                title=title,
                done_word=done_word,
                plan=plan,
                runner=runner,  # type: ignore[arg-type]
                palette=self.palette,
                on_finished=finished,
                output=output,
            )
        )

    def confirm_freeze(self, vm_ids: Sequence[str], how: str) -> None:
        if self.refuse_read_only():
            return
        plan = self.engine.plan(Action.FREEZE, vm_ids)
        default = self.engine.settings.thaw_after

        def confirmed(choice: FreezeChoice | None) -> None:
            if choice is None or not plan.eligible:
                return
            self.run_guest_action(
                "Freeze filesystems",
                "frozen",
                plan,
                lambda progress: self.engine.freeze(
                    plan.eligible,
                    mountpoints=choice.mountpoints,
                    thaw_after=choice.thaw_after,
                    progress=progress,
                ),
            )

        def clamped(thaw_after: float) -> tuple[list[str], float]:
            """The Windows guests VSS thaws sooner than `thaw_after`."""
            store = self.engine.store
            shorter = [
                v for v in plan.eligible if freeze_deadline(store.get(v), thaw_after) < thaw_after
            ]
            return shorter, VSS_FREEZE_LIMIT

        self.push_screen(
            ConfirmActionScreen(
                title="Freeze filesystems",
                verb="Freeze",
                plan=plan,
                how=how,
                palette=self.palette,
                thaw_after=default,
                keepers=lambda: self.engine.keepers(plan.eligible),
                keeper_places=self._keeper_places(plan.eligible),
                mountpoints=True,
                clamped=clamped,
            ),
            confirmed,
        )

    def _keeper_places(self, vm_ids: Sequence[str]) -> dict[str, str | None]:
        """Per VM, the hypervisor whose keeper would thaw it; None: this machine's."""
        places: dict[str, str | None] = {}
        for vm_id in vm_ids:
            snap = self.engine.store.get(vm_id)
            hypervisor = snap.ref.hypervisor if snap is not None else vm_id.split("/", 1)[0]
            places[vm_id] = None if self.engine.is_local(vm_id) else hypervisor
        return places

    def confirm_thaw(self, vm_ids: Sequence[str], how: str) -> None:
        if self.refuse_read_only():
            return
        plan = self.engine.plan(Action.THAW, vm_ids)

        def confirmed(choice: FreezeChoice | None) -> None:
            if choice is None or not plan.eligible:
                return
            self.run_guest_action(
                "Thaw filesystems",
                "thawed",
                plan,
                lambda progress: self.engine.thaw(plan.eligible, progress=progress),
            )

        self.push_screen(
            ConfirmActionScreen(
                title="Thaw filesystems", verb="Thaw", plan=plan, how=how, palette=self.palette
            ),
            confirmed,
        )

    def open_power(self, vm_ids: Sequence[str], how: str) -> None:
        if self.refuse_read_only():
            return
        plans = {opt.key: self.engine.plan(opt.action, vm_ids) for opt in POWER_OPTIONS}

        def chosen(choice: PowerChoice | None) -> None:
            if choice is None:
                return
            opt, plan = choice.option, choice.plan
            if opt.action is Action.SHUTDOWN:
                self.run_guest_action(
                    f"{opt.label}",
                    "sent",
                    plan,
                    lambda progress: self.engine.shutdown(
                        plan.eligible, mode=opt.argument, progress=progress
                    ),
                )
            else:
                self.run_guest_action(
                    f"{opt.label}",
                    "sent",
                    plan,
                    lambda progress: self.engine.suspend(
                        plan.eligible, kind=opt.argument, progress=progress
                    ),
                )

        self.push_screen(PowerScreen(plans=plans, how=how, palette=self.palette), chosen)

    def dismiss_thaw_error(self, vm_id: str) -> None:
        if self.refuse_read_only():
            return
        try:
            self.engine.dismiss_thaw_error(vm_id)
        except ReadOnlyError:
            return
        self.notify(
            f"{sanitize(vm_id, 80)}: failed thaw dismissed; the guest may still be frozen.",
            severity="warning",
            markup=False,
        )

    # -- what screens ask (ui/messages.py) -------------------------------------------------

    def on_open_details(self, message: messages.OpenDetails) -> None:
        self.open_details(message.vm_id, message.tab)

    def on_open_files(self, message: messages.OpenFiles) -> None:
        self.open_files(message.vm_id)

    def on_open_jump(self, _message: messages.OpenJump) -> None:
        self.open_jump()

    def on_jump_to(self, message: messages.JumpTo) -> None:
        self.jump_to(message.vm_id)

    def on_confirm_freeze(self, message: messages.ConfirmFreeze) -> None:
        self.confirm_freeze(message.vm_ids, message.how)

    def on_confirm_thaw(self, message: messages.ConfirmThaw) -> None:
        self.confirm_thaw(message.vm_ids, message.how)

    def on_open_power(self, message: messages.OpenPower) -> None:
        self.open_power(message.vm_ids, message.how)

    def on_dismiss_thaw_error(self, message: messages.DismissThawError) -> None:
        self.dismiss_thaw_error(message.vm_id)

    # -- quitting ----------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self._quitting:
            return
        frozen = self.engine.frozen_by_us()
        if not frozen:
            await self._stop_and_exit()
            return

        def answered(ok: bool | None) -> None:
            if ok:
                self.run_worker(self._stop_and_exit(), group="quit", exit_on_error=False)

        self.push_screen(QuitScreen(self.engine.holds, self.clock, self.palette), answered)

    async def _stop_and_exit(self) -> None:
        self._quitting = True
        owed = self.engine.frozen_by_us()
        if owed:
            self.notify(f"Thawing {len(owed)} VMs before exit…", markup=False)
        try:
            results = await self.stop_engine("quit")
        except Exception as exc:
            results = [
                ActionResult(vm_id, False, None, f"stopping the engine failed: {exc}")
                for vm_id in owed
            ]
        self._stopped = True
        failed = [r for r in results if not r.ok]
        if not failed:
            self._exit_with(0)
            return
        body = Text()
        body.append(
            f"{len(failed)} VMs could not be thawed and may stay frozen:", style=Style(bold=True)
        )
        for r in failed:
            body.append("\n  ")
            body.append_text(plain(r.vm_id, 60))
            body.append("  ")
            body.append_text(plain(r.error or "unknown", 200, style=self.palette.error))

        def answered(quit_anyway: bool | None) -> None:
            if quit_anyway:
                self._exit_with(1)
            else:
                self._quitting = False
                self._stopped = False
                self._engine_stop = None
                self.run_worker(self._restart(), group="quit", exit_on_error=False)

        self.push_screen(
            MessageScreen(
                "Thaw failed", body, safe="Stay (retry on next quit)", risky="Quit anyway"
            ),
            answered,
        )

    async def _restart(self) -> None:
        await self.engine.start()


def _failed(stopping: asyncio.Task[list[ActionResult]]) -> list[ActionResult]:
    if stopping.cancelled() or stopping.exception() is not None:
        return [ActionResult("?", False, None, "stopping the engine failed")]
    return [r for r in stopping.result() if not r.ok]


async def run_app(app: QgadashApp) -> int:
    """Run the dashboard in the current loop until it exits, then make sure the engine
    stopped and thawed, whatever ended it (quit, a stop signal, a crash in the UI).
    The exit status is 1 if any VM this process froze is not known to be thawed."""

    def stop(sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            terminal_gone()  # before anything draws again: writes now go nowhere
        app.stop_for_signal(watch.reason)

    watch = SignalWatch(stop, lambda: len(app.engine.frozen_by_us()))
    watch.install()
    app.signal_watch = watch
    try:
        await app.run_async()
    finally:
        watch.stopping()
        stopping = app.stop_engine(watch.reason)
        try:
            await asyncio.shield(stopping)
        finally:
            watch.remove()
    failed = _failed(stopping)
    for r in failed:
        say(
            f"qgadash: COULD NOT THAW {sanitize(r.vm_id, 80)}: {sanitize(r.error or '', 300)}"
            " — it may still be frozen; thaw it by hand (`qgadash thaw --match VM`)"
        )
    code = app.return_code or 0
    return 1 if failed and code == 0 else code


# mypy checks here that the app is what screens and verbs read it as.
_AS_DASHBOARD: type[Dashboard] = QgadashApp


def run_dashboard(
    engine: Engine,
    *,
    theme: str | None = None,
    config_label: str = "",
    display: DisplaySettings | None = None,
) -> int:
    """Run the dashboard until the operator quits; the exit status for the CLI."""
    app = QgadashApp(engine, theme=theme, config_label=config_label, display=display)
    return asyncio.run(run_app(app))
