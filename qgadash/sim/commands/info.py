"""Who the guest is: sync, ping, guest-info, the clock, host name, OS, time zone,
users, devices."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.schema import NO_SUCCESS_RESPONSE
from qgadash.sim.commands.state import AgentState
from qgadash.sim.profiles import Fault
from qgadash.sim.wire import QFloat, dumps

_INFO_CACHE: dict[tuple[object, ...], str] = {}


class InfoCommands(AgentState):
    """guest-info's cached command list, identity and clock reads."""

    __slots__ = ()

    def _cmd_sync(self, args: dict[str, object]) -> object:
        return args["id"]

    def _cmd_ping(self, args: dict[str, object]) -> object:
        return {}

    def _cmd_info(self, args: dict[str, object]) -> object:
        key = (
            self._profile.agent_version,
            self._profile.windows,
            self._profile.disabled_commands,
            self._frozen,
        )
        cached = _INFO_CACHE.get(key)
        if cached is None:
            era = self._era
            commands: list[dict[str, object]] = []
            for name in self._supported():
                entry: dict[str, object] = {
                    "enabled": self._disabled_reason(name) is None,
                    "name": name,
                }
                if era.success_response:
                    entry["success-response"] = name not in NO_SUCCESS_RESPONSE
                commands.append(entry)
            info: dict[str, object] = {"version": self._profile.agent_version}
            if era.lists_commands:  # qemu-ga 1.0 said only its version
                info["supported_commands"] = commands
            cached = dumps(info)
            if len(_INFO_CACHE) < 256:
                _INFO_CACHE[key] = cached
        if self._fault is Fault.OUT_OF_RANGE:
            return dumps({"version": 7, "supported_commands": {"guest-ping": "yes"}})
        return cached

    def _cmd_get_time(self, args: dict[str, object]) -> object:
        return self._guest_time_ns()

    def _cmd_host_name(self, args: dict[str, object]) -> object:
        return {"host-name": self._profile.hostname}

    def _cmd_osinfo(self, args: dict[str, object]) -> object:
        o = self._profile.os
        info: dict[str, object] = {
            "name": o.name,
            "kernel-release": o.kernel_release,
            "version": o.version,
            "pretty-name": o.pretty_name,
            "version-id": o.version_id,
            "kernel-version": o.kernel_version,
            "machine": o.machine,
            "id": o.id,
        }
        if o.variant is not None:
            info["variant"] = o.variant
        if o.variant_id is not None:
            info["variant-id"] = o.variant_id
        return info

    def _cmd_timezone(self, args: dict[str, object]) -> object:
        result: dict[str, object] = {}
        if self._profile.timezone is not None:
            result["zone"] = self._profile.timezone
        result["offset"] = self._profile.tz_offset
        return result

    def _cmd_users(self, args: dict[str, object]) -> object:
        users = []
        for user in self._profile.users:
            entry: dict[str, object] = {"user": user.name, "login-time": QFloat(user.login_time)}
            if user.domain is not None:
                entry["domain"] = user.domain
            users.append(entry)
        return users

    def _cmd_devices(self, args: dict[str, object]) -> object:
        date = 1_700_000_000 * 10**9
        return [
            {
                "driver-name": "netkvm",
                "driver-date": date,
                "driver-version": "100.94.104.24900",
                "id": {"type": "pci", "vendor-id": 6900, "device-id": 4096},
            },
            {
                "driver-name": "viostor",
                "driver-date": date,
                "driver-version": "100.94.104.24900",
                "id": {"type": "pci", "vendor-id": 6900, "device-id": 4097},
            },
        ]


HANDLERS: dict[str, Callable[[InfoCommands, dict[str, object]], object]] = {
    "guest-sync": InfoCommands._cmd_sync,
    "guest-sync-delimited": InfoCommands._cmd_sync,
    "guest-ping": InfoCommands._cmd_ping,
    "guest-info": InfoCommands._cmd_info,
    "guest-get-time": InfoCommands._cmd_get_time,
    "guest-get-host-name": InfoCommands._cmd_host_name,
    "guest-get-osinfo": InfoCommands._cmd_osinfo,
    "guest-get-timezone": InfoCommands._cmd_timezone,
    "guest-get-users": InfoCommands._cmd_users,
    "guest-get-devices": InfoCommands._cmd_devices,
}
