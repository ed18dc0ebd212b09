"""What the dashboard needs from the fleet engine, written down as Protocols.

The dashboard is typed against these rather than `FleetEngine` itself so that tests can
drive it with a small in-memory engine and the real one satisfies them structurally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from qgadash.fleet.actions import Action, ActionPlan, ReadOnlyError
from qgadash.fleet.admin import GuestAdmin
from qgadash.fleet.config import Settings
from qgadash.fleet.files import DirEntry, DirListing, FileSlice, ListingUnavailable
from qgadash.fleet.guard import Hold
from qgadash.fleet.keeping import Settled
from qgadash.fleet.model import ActionResult
from qgadash.fleet.store import FleetStore

__all__ = [
    "Action",
    "ActionPlan",
    "ActionProgress",
    "ActionResult",
    "DirEntry",
    "DirListing",
    "Engine",
    "FileSlice",
    "Files",
    "Hold",
    "ListingUnavailable",
    "ReadOnlyError",
    "Settled",
    "TransferProgress",
]

ActionProgress = Callable[[ActionResult], None]
TransferProgress = Callable[[int, int | None], None]


class Files(Protocol):
    def can_list(self, vm_id: str) -> str | None: ...

    async def list_dir(self, vm_id: str, path: str) -> DirListing: ...

    async def read(
        self, vm_id: str, path: str, *, offset: int = 0, max_bytes: int = 1 << 20
    ) -> FileSlice: ...

    async def tail(self, vm_id: str, path: str, *, max_bytes: int = 64 * 1024) -> FileSlice: ...

    async def download(
        self,
        vm_id: str,
        path: str,
        local: Path,
        *,
        progress: TransferProgress | None = None,
        overwrite: bool = False,
    ) -> int:
        """FileExistsError if `local` exists and `overwrite` is not set."""
        ...

    async def upload(
        self, vm_id: str, local: Path, path: str, *, progress: TransferProgress | None = None
    ) -> int: ...


class Engine(Protocol):
    """The subset of `qgadash.fleet.engine.FleetEngine` the dashboard uses."""

    @property
    def store(self) -> FleetStore: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def files(self) -> Files: ...

    @property
    def admin(self) -> GuestAdmin:
        """Clock, passwords, SSH keys, vCPUs, live stats (qgadash.fleet.admin)."""
        ...

    async def start(self) -> None: ...

    async def stop(self, reason: str = "quit", budget: float = 0.0) -> list[ActionResult]:
        """Stop polling and thaw every hold; `reason` names the thaws in the audit log."""
        ...

    async def settle_journal(self) -> list[Settled]:
        """Thaw what an earlier, dead qgadash owed past its deadline."""
        ...

    def frozen_by_us(self) -> list[str]: ...

    def holds(self) -> list[Hold]:
        """Every freeze this process holds, timed or not: deadline, keeper, last error."""
        ...

    def is_local(self, vm_id: str) -> bool:
        """Whether this machine reaches the VM's agent directly (its keeper is local)."""
        ...

    async def keepers(self, vm_ids: Sequence[str]) -> dict[str, str | None]:
        """Per VM: None if a thaw keeper can be armed next to it, else why not."""
        ...

    def plan(self, action: Action, vm_ids: Sequence[str]) -> ActionPlan: ...

    def poll_stats(self, *, cpu: bool, disks: bool) -> None:
        """Poll every VM's CPU / disk counters (the optional columns), or stop."""
        ...

    async def freeze(
        self,
        vm_ids: Sequence[str],
        *,
        mountpoints: Sequence[str] | None = None,
        thaw_after: float | None = None,
        progress: ActionProgress | None = None,
    ) -> list[ActionResult]: ...

    async def thaw(
        self, vm_ids: Sequence[str], *, progress: ActionProgress | None = None
    ) -> list[ActionResult]: ...

    async def shutdown(
        self,
        vm_ids: Sequence[str],
        *,
        mode: str = "powerdown",
        progress: ActionProgress | None = None,
    ) -> list[ActionResult]: ...

    async def suspend(
        self, vm_ids: Sequence[str], *, kind: str, progress: ActionProgress | None = None
    ) -> list[ActionResult]: ...

    async def fstrim(
        self,
        vm_ids: Sequence[str],
        *,
        minimum: int | None = None,
        progress: ActionProgress | None = None,
    ) -> list[ActionResult]: ...

    async def exec(
        self,
        vm_ids: Sequence[str],
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        progress: ActionProgress | None = None,
    ) -> list[ActionResult]:
        """Each result's value: exitcode, signal, stdout, stderr, *_truncated."""
        ...

    async def agent_command(
        self, vm_id: str, name: str, args: dict[str, Any] | None
    ) -> ActionResult:
        """Any agent command, under `qgadash.agent.policy` (read-only, freeze guard)."""
        ...

    async def forget(self, vm_id: str) -> bool:
        """Remove the row of a VM this process shut down or suspended."""
        ...

    def dismiss_thaw_error(self, vm_id: str) -> None: ...
