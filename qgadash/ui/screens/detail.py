"""Details of one VM (enter): overview, network, storage and agent tabs, kept live, a
Files tab that opens the guest's file browser, and an Admin tab (vCPUs, SSH keys) read
each time it opens."""

from __future__ import annotations

import contextlib
from collections import deque
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from qgadash.agent.errors import AgentError
from qgadash.fleet.admin_view import AdminView, key_users
from qgadash.fleet.guard import Hold
from qgadash.fleet.live_stats import LiveStats, StatsSampler
from qgadash.fleet.model import VmSnapshot
from qgadash.ui import bindings, messages
from qgadash.ui.dashboard import Dashboard, dashboard_of
from qgadash.ui.screens.files import FilesScreen
from qgadash.ui.screens.modals.prompt import PromptScreen
from qgadash.ui.vm_view import (
    admin_text,
    agent_text,
    live_text,
    network_text,
    overview_text,
    storage_text,
    title_text,
)

__all__ = ["DetailScreen"]

TABS = ("overview", "network", "storage", "files", "agent", "admin")
LIVE_SAMPLES = 30  # the sparklines' history: the last 30 poll intervals
# Tabs drawn from the snapshot; the Files tab is a way into the file browser instead.
DRAWN_TABS = ("overview", "network", "storage", "agent", "admin")


class DetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = list(bindings.DETAIL)

    def __init__(self, vm_id: str, tab: str = "overview") -> None:
        super().__init__(classes="vm-screen")
        self.vm_id = vm_id
        self._initial_tab = tab if tab in DRAWN_TABS else "overview"
        self._last_tab = self._initial_tab
        # Until the tabs report their first activation, a tab chosen by key would be
        # undone by it (Textual's Tabs activate their initial tab by message, after mount).
        self._tabs_ready = False
        self._pending_tab: str | None = None
        self._drawn: VmSnapshot | None = None
        # CPU % and disk rates while the screen is open (guest-get-cpustats/diskstats,
        # every poll interval; not polled fleet-wide).
        self._live: deque[LiveStats] = deque(maxlen=LIVE_SAMPLES)
        self._sampler: StatsSampler | None = None
        # The Admin tab: read when it opens (not polled); users the operator asked for.
        self._admin: AdminView | None = None
        self._asked_users: list[str] = []

    @property
    def qapp(self) -> Dashboard:
        return dashboard_of(self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with TabbedContent(initial=self._initial_tab, id="detail-tabs"):
            for tab in TABS:
                with TabPane(tab.capitalize(), id=tab), VerticalScroll():
                    if tab == "files":
                        yield Static(Text(" Opening the file browser (b)…"), id="files-tab-body")
                    else:
                        yield Static(id=f"{tab}-body")
                        if tab == "overview":  # shown once there are rates to show
                            live = Static(id="live-body")
                            live.display = False
                            yield live
        yield Footer()

    def on_mount(self) -> None:
        self._sampler = self.qapp.engine.admin.sampler(self.vm_id)
        self.set_interval(max(0.5, self.qapp.engine.settings.poll_interval), self._sample)
        self.redraw()

    def _sample(self) -> None:
        self.run_worker(self._take_sample(), group="live-stats", exclusive=True)

    async def _take_sample(self) -> None:
        sampler = self._sampler
        if sampler is None or not (sampler.has_cpu or sampler.has_disks):
            return
        try:
            stats = await sampler.sample()
        except AgentError:
            return  # the agent's state shows in the overview; the sparklines just pause
        if stats is None:
            return
        self._live.append(stats)
        try:
            body = self.query_one("#live-body", Static)
        except NoMatches:
            return
        body.update(live_text(self._live, self.qapp.palette))
        body.display = True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in ("freeze", "thaw", "power") and self.qapp.read_only)

    def redraw(self) -> None:
        snap = self.qapp.engine.store.get(self.vm_id)
        palette = self.qapp.palette
        if snap is None:
            self.query_one("#detail-title", Static).update(
                Text(f" {self.vm_id} is gone from the inventory.", style=palette.error)
            )
            return
        now = self.qapp.clock()
        self._drawn = snap
        self.query_one("#detail-title", Static).update(title_text(snap, palette))
        self.query_one("#overview-body", Static).update(
            overview_text(snap, now, palette, self._hold())
        )
        history = self.qapp.engine.store.nic_history(self.vm_id)
        self.query_one("#network-body", Static).update(
            network_text(
                snap,
                history,
                palette,
                sparklines=not self.qapp.display_settings.low_bandwidth,
            )
        )
        self.query_one("#storage-body", Static).update(storage_text(snap, palette))
        self.query_one("#agent-body", Static).update(
            agent_text(snap, palette, self.qapp.engine.store.note(self.vm_id))
        )

    def fleet_changed(self, changed: set[str], removed: set[str]) -> None:
        if self.vm_id in changed or self.vm_id in removed:
            # A poll can land before the compose (on_mount draws it then) or while the
            # screen is taken down.
            with contextlib.suppress(NoMatches):
                self.redraw()

    def _hold(self) -> Hold | None:
        """This session's hold on the VM (its deadline and keeper), if any."""
        return next((h for h in self.qapp.engine.holds() if h.vm_id == self.vm_id), None)

    def tick(self) -> None:
        snap = self.qapp.engine.store.get(self.vm_id)
        hold = self._hold()
        if snap is not None and (hold is not None or snap.last_seen is not None):
            try:
                body = self.query_one("#overview-body", Static)
            except NoMatches:  # the screen is being taken down
                return
            body.update(overview_text(snap, self.qapp.clock(), self.qapp.palette, hold))

    def action_tab(self, tab: str) -> None:
        if not self._tabs_ready:
            self._pending_tab = tab
            return
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id or ""
        if not self._tabs_ready:
            self._tabs_ready = True
            pending, self._pending_tab = self._pending_tab, None
            if pending is not None and pending != tab:
                event.tabbed_content.active = pending
                return
        if tab != "files":
            self._last_tab = tab
            if tab == "admin":
                self._read_admin()
            return
        # The tab is the way in; coming back shows the tab that was open before.
        event.tabbed_content.active = self._last_tab
        self.action_files()

    def _read_admin(self) -> None:
        self.run_worker(self._take_admin(), group="admin-view", exclusive=True)

    async def _take_admin(self) -> None:
        """vCPUs and SSH keys, read now; the tab says "reading" until they come."""
        try:
            body = self.query_one("#admin-body", Static)
        except NoMatches:
            return
        palette = self.qapp.palette
        if self._admin is None:
            body.update(admin_text(None, palette))
        snap = self.qapp.engine.store.get(self.vm_id)
        users = key_users(snap, self._asked_users)
        try:
            view = await self.qapp.engine.admin.view(snap, self.vm_id, users)
        except AgentError as exc:
            with contextlib.suppress(NoMatches):
                self.query_one("#admin-body", Static).update(
                    admin_text(None, palette, error=str(exc))
                )
            return
        self._admin = view
        with contextlib.suppress(NoMatches):
            self.query_one("#admin-body", Static).update(
                admin_text(view, palette, asked=bool(self._asked_users))
            )

    def action_key_user(self) -> None:
        """Another user's SSH keys on the Admin tab (asked for, then read with the rest)."""

        def typed(values: dict[str, str] | None) -> None:
            user = (values or {}).get("user", "").strip()
            if not user:
                return
            if user in self._asked_users:
                self._asked_users.remove(user)
            self._asked_users.append(user)
            if self._tabs_ready and self.query_one(TabbedContent).active == "admin":
                self._read_admin()
            else:
                self.action_tab("admin")

        self.app.push_screen(
            PromptScreen("SSH keys of another user", [("user", "User:", "")], confirm="Show"),
            typed,
        )

    def action_files(self) -> None:
        # As a tab: the digits of the other tabs bring them back; nothing is focused
        # that would take the next key as text.
        self.app.push_screen(FilesScreen(self.vm_id, back_to_tab=self.action_tab))

    def action_freeze(self) -> None:
        self.post_message(messages.ConfirmFreeze([self.vm_id], "this VM"))

    def action_thaw(self) -> None:
        self.post_message(messages.ConfirmThaw([self.vm_id], "this VM"))

    def action_power(self) -> None:
        self.post_message(messages.OpenPower([self.vm_id], "this VM"))
