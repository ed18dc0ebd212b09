"""The guest's network and storage as it describes them: interfaces (with counters),
routes, filesystems, disks."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.state import AgentState
from qgadash.sim.profiles import Disk


class HardwareCommands(AgentState):
    """Interfaces, routes, filesystems and disks."""

    __slots__ = ()

    def _cmd_interfaces(self, args: dict[str, object]) -> object:
        t = self._elapsed()
        result = []
        for nic in self._profile.interfaces:
            entry: dict[str, object] = {"name": nic.name}
            if nic.addresses:
                entry["ip-addresses"] = [
                    {"ip-address-type": a.family, "ip-address": a.address, "prefix": a.prefix}
                    for a in nic.addresses
                ]
            if nic.statistics and self._era.nic_statistics:
                rx = self._counter(nic.rx_bytes, nic.rx_rate, t)
                tx = self._counter(nic.tx_bytes, nic.tx_rate, t)
                entry["statistics"] = {
                    "tx-packets": nic.tx_packets + (tx - nic.tx_bytes) // 900,
                    "tx-errs": 0,
                    "rx-bytes": rx,
                    "rx-dropped": 0,
                    "rx-packets": nic.rx_packets + (rx - nic.rx_bytes) // 1200,
                    "rx-errs": 0,
                    "tx-bytes": tx,
                    "tx-dropped": 0,
                }
            if nic.mac:
                entry["hardware-address"] = nic.mac
            result.append(entry)
        return result

    def _cmd_routes(self, args: dict[str, object]) -> object:
        nic = self._profile.interfaces[-1].name if self._profile.interfaces else "eth0"
        return [
            {
                "iface": nic,
                "destination": "0.0.0.0",
                "metric": 100,
                "gateway": "10.0.0.1",
                "mask": "0.0.0.0",
                "irtt": 0,
                "flags": 3,
                "refcnt": 0,
                "use": 0,
                "window": 0,
                "mtu": 0,
                "version": 4,
            },
            {
                "iface": nic,
                "destination": "10.0.0.0",
                "metric": 100,
                "gateway": "0.0.0.0",
                "mask": "255.255.0.0",
                "irtt": 0,
                "flags": 1,
                "refcnt": 0,
                "use": 0,
                "window": 0,
                "mtu": 0,
                "version": 4,
            },
        ]

    def _disk_address(self, fs_disk: Disk) -> dict[str, object]:
        address: dict[str, object] = {
            "bus-type": fs_disk.bus_type,
            "bus": 0,
            "unit": 0,
            "pci-controller": {"bus": 0, "slot": fs_disk.pci_slot, "domain": 0, "function": 0},
        }
        if fs_disk.serial is not None and self._era.disk_serial:
            address["serial"] = fs_disk.serial
        if self._era.disk_dev:
            address["dev"] = fs_disk.dev
        address["target"] = 0
        return address

    def _cmd_fsinfo(self, args: dict[str, object]) -> object:
        result = []
        usage = self._era.fs_usage
        for fs in self._profile.filesystems:
            entry: dict[str, object] = {"name": fs.name}
            if usage:
                entry["total-bytes"] = fs.total_bytes
            entry["mountpoint"] = fs.mountpoint
            entry["disk"] = [self._disk_address(fs.disk)] if fs.disk is not None else []
            if usage:
                entry["used-bytes"] = fs.used_bytes
            entry["type"] = fs.type
            result.append(entry)
        return result

    def _cmd_disks(self, args: dict[str, object]) -> object:
        result: list[object] = []
        for disk in self._disks():
            if self._profile.windows:
                result.append(
                    {"name": disk.dev, "partition": False, "address": self._disk_address(disk)}
                )
                continue
            result.append(
                {
                    "name": disk.dev,
                    "dependencies": [],
                    "partition": False,
                    "address": self._disk_address(disk),
                }
            )
            if disk.dev.endswith("a"):
                result.append(
                    {"name": disk.dev + "1", "dependencies": [disk.dev], "partition": True}
                )
        return result


HANDLERS: dict[str, Callable[[HardwareCommands, dict[str, object]], object]] = {
    "guest-network-get-interfaces": HardwareCommands._cmd_interfaces,
    "guest-network-get-route": HardwareCommands._cmd_routes,
    "guest-get-fsinfo": HardwareCommands._cmd_fsinfo,
    "guest-get-disks": HardwareCommands._cmd_disks,
}
