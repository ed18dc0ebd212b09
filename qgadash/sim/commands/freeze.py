"""Filesystem freeze and thaw (with the Windows VSS 10 s limit) and fstrim."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.schema import CommandError
from qgadash.sim.commands.state import AgentState


class FreezeCommands(AgentState):
    """guest-fsfreeze-* and guest-fstrim."""

    __slots__ = ()

    def _cmd_fsfreeze_status(self, args: dict[str, object]) -> object:
        return "frozen" if self._frozen else "thawed"

    def _cmd_fsfreeze_freeze(self, args: dict[str, object]) -> object:
        self._frozen = True
        self._frozen_at = self._clock()
        return len(self._profile.filesystems)

    def _cmd_fsfreeze_freeze_list(self, args: dict[str, object]) -> object:
        wanted = args.get("mountpoints")
        self._frozen = True
        self._frozen_at = self._clock()
        if wanted is None:
            return len(self._profile.filesystems)
        assert isinstance(wanted, list)
        mounts = {fs.mountpoint for fs in self._profile.filesystems}
        return sum(1 for m in wanted if m in mounts)

    def _cmd_fsfreeze_thaw(self, args: dict[str, object]) -> object:
        if not self._frozen:
            return 0
        held = self._clock() - self._frozen_at
        self._frozen = False
        if self._profile.windows and held > 10.0:
            # VSS released the writes by itself after 10 s (qga/vss-win32/requester.cpp);
            # the agent is thawed again all the same.
            raise CommandError("couldn't hold writes: fsfreeze is limited up to 10 seconds")
        return len(self._profile.filesystems)

    def _cmd_fstrim(self, args: dict[str, object]) -> object:
        if not self._era.fstrim_paths:
            return {}  # before 2.4 guest-fstrim returned nothing
        minimum = args.get("minimum", 0)
        paths = []
        for fs in self._profile.filesystems:
            free = max(0, fs.total_bytes - fs.used_bytes)
            paths.append({"path": fs.mountpoint, "trimmed": free // 3, "minimum": minimum})
        return {"paths": paths}


HANDLERS: dict[str, Callable[[FreezeCommands, dict[str, object]], object]] = {
    "guest-fsfreeze-status": FreezeCommands._cmd_fsfreeze_status,
    "guest-fsfreeze-freeze": FreezeCommands._cmd_fsfreeze_freeze,
    "guest-fsfreeze-freeze-list": FreezeCommands._cmd_fsfreeze_freeze_list,
    "guest-fsfreeze-thaw": FreezeCommands._cmd_fsfreeze_thaw,
    "guest-fstrim": FreezeCommands._cmd_fstrim,
}
