"""Details of one VM (enter): overview, network, storage and agent tabs, kept live, and
a Files tab that opens the guest's file browser."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from qgadash.fleet.guard import Hold
from qgadash.fleet.model import VmSnapshot
from qgadash.ui.key_hints import PINNED_BINDINGS
from qgadash.ui.screens.files import FilesScreen
from qgadash.ui.vm_view import agent_text, network_text, overview_text, storage_text, title_text

if TYPE_CHECKING:
    from qgadash.ui.app import QgadashApp

__all__ = ["DetailScreen"]

TABS = ("overview", "network", "storage", "files", "agent")
# Tabs drawn from the snapshot; the Files tab is a way into the file browser instead.
DRAWN_TABS = ("overview", "network", "storage", "agent")


class DetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        # First, so the footer shows them whatever its width (the app's own come last).
        *PINNED_BINDINGS,
        Binding("escape", "app.pop_screen", "Back", id="detail.back"),
        Binding("1", "tab('overview')", "Overview", show=False, id="detail.overview"),
        Binding("2", "tab('network')", "Network", show=False, id="detail.network"),
        Binding("3", "tab('storage')", "Storage", show=False, id="detail.storage"),
        Binding("4", "tab('files')", "Files", show=False, id="detail.files-tab"),
        Binding("5", "tab('agent')", "Agent", show=False, id="detail.agent"),
        Binding("b", "files", "Files", id="detail.files"),
        Binding("f", "freeze", "Freeze", id="detail.freeze"),
        Binding("t", "thaw", "Thaw", id="detail.thaw"),
        Binding("p", "power", "Power", id="detail.power"),
    ]

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

    @property
    def qapp(self) -> QgadashApp:
        return cast("QgadashApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with TabbedContent(initial=self._initial_tab, id="detail-tabs"):
            for tab in TABS:
                with TabPane(tab.capitalize(), id=tab), VerticalScroll():
                    if tab == "files":
                        yield Static(Text(" Opening the file browser (b)…"), id="files-tab-body")
                    else:
                        yield Static(id=f"{tab}-body")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()

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
        self.query_one("#agent-body", Static).update(agent_text(snap, palette))

    def fleet_changed(self, changed: set[str], removed: set[str]) -> None:
        if self.vm_id in changed or self.vm_id in removed:
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
            return
        # The tab is the way in; coming back shows the tab that was open before.
        event.tabbed_content.active = self._last_tab
        self.action_files()

    def action_files(self) -> None:
        # As a tab: the digits of the other tabs bring them back; nothing is focused
        # that would take the next key as text.
        self.app.push_screen(FilesScreen(self.vm_id, back_to_tab=self.action_tab))

    def action_freeze(self) -> None:
        self.qapp.confirm_freeze([self.vm_id], "this VM")

    def action_thaw(self) -> None:
        self.qapp.confirm_thaw([self.vm_id], "this VM")

    def action_power(self) -> None:
        self.qapp.open_power([self.vm_id], "this VM")
