"""Shutdown, reboot and suspend: no reply, then the VM goes away or pauses."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.schema import NO_REPLY, CommandError
from qgadash.sim.commands.state import AgentState


class PowerCommands(AgentState):
    """guest-shutdown and guest-suspend-*."""

    __slots__ = ()

    def _cmd_shutdown(self, args: dict[str, object]) -> object:
        mode = args.get("mode", "powerdown")
        if mode not in ("powerdown", "halt", "reboot"):
            raise CommandError("Parameter 'mode' expects 'halt', 'powerdown' or 'reboot'")
        now = self._clock()
        if mode == "reboot":
            self._restart()
            self._frozen = False
            self._resume_at = now + 5.0
        else:
            self._down = True
            self._power_off = mode == "powerdown"
        return NO_REPLY

    def _suspend(self, mode: str) -> object:
        if mode == "hybrid" and self._profile.os.id == "alpine":
            raise CommandError("the requested suspend mode is not supported by the guest")
        self._resume_at = self._clock() + 10.0
        return NO_REPLY

    def _cmd_suspend_ram(self, args: dict[str, object]) -> object:
        return self._suspend("ram")

    def _cmd_suspend_disk(self, args: dict[str, object]) -> object:
        return self._suspend("disk")

    def _cmd_suspend_hybrid(self, args: dict[str, object]) -> object:
        return self._suspend("hybrid")


HANDLERS: dict[str, Callable[[PowerCommands, dict[str, object]], object]] = {
    "guest-shutdown": PowerCommands._cmd_shutdown,
    "guest-suspend-ram": PowerCommands._cmd_suspend_ram,
    "guest-suspend-disk": PowerCommands._cmd_suspend_disk,
    "guest-suspend-hybrid": PowerCommands._cmd_suspend_hybrid,
}
