"""hosts.toml: parsed into typed settings, with errors people can act on.

Every error names the file, the table (`hypervisor[2]`), the key, what was found and
what was expected (contracts.md). Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgadash.fleet.model import SessionMode
from qgadash.transport.address import parse_ssh_spec, parse_tcp_address

VIA_CHOICES = ("socket", "exec", "sudo", "libvirt")
# driver[+transport]://[user@][host][:port]/path[?params]: what virsh -c takes, and
# nothing a shell or virsh would split or interpret.
_LIBVIRT_URI = re.compile(r"^[a-z][a-z0-9]*(\+[a-z0-9]+)?://[A-Za-z0-9@.:_~%/?&=,\[\]+-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ConfigError(Exception):
    """A configuration problem, phrased for the operator; the CLI exits with status 2."""

    def __init__(
        self, file: Path | str | None, table: str | None, key: str | None, found: Any, expected: str
    ) -> None:
        self.file = str(file) if file is not None else "<settings>"
        self.table = table
        self.key = key
        self.found = found
        self.expected = expected
        where = self.file
        if table:
            where += f": [{table}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: found {_show(found)}, expected {expected}")


def _show(value: Any) -> str:
    if isinstance(value, _Missing):
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Missing:
    pass


MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class Settings:
    poll_interval: float = 5.0
    timeout: float = 3.0
    action_timeout: float = 30.0  # freeze, thaw, fstrim: their own, longer
    thaw_after: float = 60.0
    thaw_retry_for: float = 60.0  # the CLI retries a failed deadline thaw this long, then exits 1
    max_in_flight: int = 256
    read_only: bool = False
    theme: str = "qgadash-dark"
    max_reply_bytes: int = 16 * 1024 * 1024
    max_download_bytes: int = 1 << 30  # one download from a guest, at most
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> keys


@dataclass(frozen=True, slots=True)
class HypervisorConfig:
    name: str
    agents: tuple[str, ...] = ()
    ssh: str | None = None
    session: SessionMode | None = None  # None: the transport's default
    via: str = "socket"
    tags: tuple[str, ...] = ()
    identity: str | None = None
    known_hosts: str | None = None
    jump: str | None = None
    connect_timeout: float = 10.0
    keepalive_interval: float = 3.0  # a dead link is noticed after interval × count_max
    keepalive_count_max: int = 3
    uri: str | None = None  # libvirt's connection URI (via = "libvirt"); None: qemu:///system
    proxmox_configs: str | None = None  # where <vmid>.conf are (None: /etc/pve/qemu-server)

    @property
    def local(self) -> bool:
        return self.ssh is None


@dataclass(frozen=True, slots=True)
class VmConfig:
    name: str
    hypervisor: str
    agent: str
    tags: tuple[str, ...] = ()
    session: SessionMode | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    settings: Settings
    hypervisors: tuple[HypervisorConfig, ...]
    vms: tuple[VmConfig, ...] = ()

    def hypervisor(self, name: str) -> HypervisorConfig | None:
        return next((h for h in self.hypervisors if h.name == name), None)


def find_config(explicit: str | os.PathLike[str] | None) -> Path:
    """--hosts, else ./hosts.toml, else $XDG_CONFIG_HOME/qgadash/hosts.toml."""
    if explicit is not None:
        return Path(explicit)
    local = Path("hosts.toml")
    if local.exists():
        return local
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qgadash" / "hosts.toml"


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            path, None, None, MISSING, "a hosts.toml file (see hosts.example.toml)"
        ) from None
    except OSError as exc:
        raise ConfigError(path, None, None, exc.strerror, "a readable file") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(
            path, None, None, "bytes that are not UTF-8", "a UTF-8 TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, None, f"invalid TOML ({exc})", "valid TOML") from None
    return parse_config(doc, path)


def parse_config(doc: dict[str, Any], path: Path | None = None) -> Config:
    reader = _Reader(path)
    allowed_top = {"settings", "hypervisor", "vm"}
    for key in doc:
        if key not in allowed_top:
            raise ConfigError(
                path, None, key, doc[key], "one of [settings], [[hypervisor]], [[vm]]"
            )
    settings = reader.settings(doc.get("settings", {}))
    hv_list = doc.get("hypervisor", [])
    if not isinstance(hv_list, list):
        raise ConfigError(path, None, "hypervisor", hv_list, "an array of tables [[hypervisor]]")
    hypervisors = tuple(reader.hypervisor(item, i) for i, item in enumerate(hv_list))
    names = [h.name for h in hypervisors]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(
                path, f"hypervisor[{i}]", "name", name, "a name no other hypervisor has"
            )
    vm_list = doc.get("vm", [])
    if not isinstance(vm_list, list):
        raise ConfigError(path, None, "vm", vm_list, "an array of tables [[vm]]")
    vms = tuple(reader.vm(item, i, set(names)) for i, item in enumerate(vm_list))
    first: dict[tuple[str, str], int] = {}
    for i, vm in enumerate(vms):
        vm_key = (vm.hypervisor, vm.name)
        if vm_key in first:
            raise ConfigError(
                path,
                f"vm[{i}]",
                "name",
                vm.name,
                f"a name no other [[vm]] of {vm.hypervisor!r} has (vm[{first[vm_key]}] has it)",
            )
        first[vm_key] = i
    if not hypervisors and not vms:
        raise ConfigError(
            path, None, "hypervisor", MISSING, "at least one [[hypervisor]] or [[vm]]"
        )
    return Config(path, settings, hypervisors, vms)


class _Reader:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _table(self, value: Any, table: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(self.path, table, None, value, "a table")
        return value

    def _unknown(self, obj: dict[str, Any], table: str, allowed: set[str]) -> None:
        for key in obj:
            if key not in allowed:
                raise ConfigError(
                    self.path, table, key, obj[key], "one of the keys " + ", ".join(sorted(allowed))
                )

    def _number(
        self, obj: dict[str, Any], table: str, key: str, default: float, lo: float, hi: float
    ) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ConfigError(
                self.path, table, key, value, f"a number of seconds from {lo:g} to {hi:g}"
            )
        return float(value)

    def _int(
        self, obj: dict[str, Any], table: str, key: str, default: int, lo: int, hi: int
    ) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(self.path, table, key, value, f"a whole number from {lo} to {hi}")
        return value

    def _bool(self, obj: dict[str, Any], table: str, key: str, default: bool) -> bool:
        value = obj.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(self.path, table, key, value, "true or false")
        return value

    def _str(self, obj: dict[str, Any], table: str, key: str, required: bool = False) -> str | None:
        value = obj.get(key, MISSING)
        if isinstance(value, _Missing):
            if required:
                raise ConfigError(self.path, table, key, MISSING, "a string")
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(self.path, table, key, value, "a non-empty string")
        return value

    def _strings(self, obj: dict[str, Any], table: str, key: str) -> tuple[str, ...]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self.path, table, key, value, "a list of non-empty strings")
        return tuple(value)

    def _name(self, obj: dict[str, Any], table: str) -> str:
        name = self._str(obj, table, "name", required=True)
        assert name is not None
        if not _NAME_RE.match(name):
            raise ConfigError(
                self.path, table, "name", name, "letters, digits, '.', '_' or '-' (at most 63)"
            )
        return name

    def _session(self, obj: dict[str, Any], table: str) -> SessionMode | None:
        value = obj.get("session")
        if value is None:
            return None
        try:
            return SessionMode(value)
        except ValueError:
            raise ConfigError(self.path, table, "session", value, '"held" or "per-poll"') from None

    def settings(self, value: Any) -> Settings:
        table = "settings"
        obj = self._table(value, table)
        self._unknown(
            obj,
            table,
            {
                "poll_interval",
                "timeout",
                "action_timeout",
                "thaw_after",
                "thaw_retry_for",
                "max_in_flight",
                "read_only",
                "theme",
                "max_reply_bytes",
                "max_download_bytes",
                "keys",
            },
        )
        keys = obj.get("keys", {})
        if not isinstance(keys, dict) or not all(isinstance(v, str) and v for v in keys.values()):
            raise ConfigError(self.path, table, "keys", keys, 'a table of binding id = "key,key"')
        return Settings(
            poll_interval=self._number(obj, table, "poll_interval", 5.0, 0.1, 86400),
            timeout=self._number(obj, table, "timeout", 3.0, 0.05, 600),
            action_timeout=self._number(obj, table, "action_timeout", 30.0, 0.1, 3600),
            thaw_after=self._number(obj, table, "thaw_after", 60.0, 0, 86400),
            thaw_retry_for=self._number(obj, table, "thaw_retry_for", 60.0, 0, 86400),
            max_in_flight=self._int(obj, table, "max_in_flight", 256, 1, 100_000),
            read_only=self._bool(obj, table, "read_only", False),
            theme=self._str(obj, table, "theme") or "qgadash-dark",
            max_reply_bytes=self._int(obj, table, "max_reply_bytes", 16 * 1024 * 1024, 4096, 2**30),
            max_download_bytes=self._int(obj, table, "max_download_bytes", 1 << 30, 1, 2**50),
            keys=dict(keys),
        )

    def hypervisor(self, value: Any, index: int) -> HypervisorConfig:
        table = f"hypervisor[{index}]"
        obj = self._table(value, table)
        self._unknown(
            obj,
            table,
            {
                "name",
                "ssh",
                "agents",
                "session",
                "via",
                "tags",
                "identity",
                "known_hosts",
                "jump",
                "connect_timeout",
                "keepalive_interval",
                "keepalive_count_max",
                "uri",
                "proxmox_configs",
            },
        )
        via = obj.get("via", "socket")
        if via not in VIA_CHOICES:
            raise ConfigError(
                self.path, table, "via", via, " or ".join(f'"{v}"' for v in VIA_CHOICES)
            )
        ssh = self._ssh_target(obj, table, "ssh")
        jump = self._ssh_target(obj, table, "jump")
        agents = self._strings(obj, table, "agents")
        if via != "libvirt" and not agents:
            raise ConfigError(
                self.path,
                table,
                "agents",
                obj.get("agents", MISSING),
                'a list of socket globs (or via = "libvirt")',
            )
        if via in ("exec", "sudo") and ssh is None:
            raise ConfigError(
                self.path, table, "via", via, '"socket" or "libvirt" for a hypervisor without ssh'
            )
        uri = self._str(obj, table, "uri")
        if uri is not None and via != "libvirt":
            raise ConfigError(
                self.path, table, "uri", uri, 'no uri unless via = "libvirt" (it is libvirt\'s)'
            )
        if uri is not None and not _LIBVIRT_URI.match(uri):
            raise ConfigError(
                self.path,
                table,
                "uri",
                uri,
                'a libvirt URI such as "qemu:///system", "qemu:///session" or '
                '"qemu+ssh://user@host/system" (no spaces or quotes)',
            )
        proxmox_configs = self._str(obj, table, "proxmox_configs")
        if proxmox_configs is not None and not proxmox_configs.startswith("/"):
            raise ConfigError(
                self.path, table, "proxmox_configs", proxmox_configs, "an absolute directory"
            )
        return HypervisorConfig(
            name=self._name(obj, table),
            agents=agents,
            ssh=ssh,
            session=self._session(obj, table),
            via=via,
            tags=self._strings(obj, table, "tags"),
            identity=self._str(obj, table, "identity"),
            known_hosts=self._str(obj, table, "known_hosts"),
            jump=jump,
            connect_timeout=self._number(obj, table, "connect_timeout", 10.0, 0.5, 600),
            keepalive_interval=self._number(obj, table, "keepalive_interval", 3.0, 0.5, 600),
            keepalive_count_max=self._int(obj, table, "keepalive_count_max", 3, 1, 100),
            uri=uri,
            proxmox_configs=proxmox_configs,
        )

    def _ssh_target(self, obj: dict[str, Any], table: str, key: str) -> str | None:
        value = self._str(obj, table, key)
        if value is not None:
            try:
                parse_ssh_spec(value)
            except ValueError:
                raise ConfigError(
                    self.path, table, key, value, "[user@]host[:port] with a port 1-65535"
                ) from None
        return value

    def vm(self, value: Any, index: int, hypervisors: set[str]) -> VmConfig:
        table = f"vm[{index}]"
        obj = self._table(value, table)
        self._unknown(obj, table, {"name", "hypervisor", "agent", "tags", "session"})
        name = self._name(obj, table)
        hv = self._str(obj, table, "hypervisor") or "local"
        if hv != "local" and hv not in hypervisors:
            raise ConfigError(
                self.path,
                table,
                "hypervisor",
                hv,
                "the name of a [[hypervisor]] (or none, for this machine)",
            )
        agent = self._str(obj, table, "agent", required=True)
        assert agent is not None
        try:
            parse_tcp_address(agent)
        except ValueError:
            raise ConfigError(
                self.path, table, "agent", agent, "a socket path or tcp:HOST:PORT (port 1-65535)"
            ) from None
        return VmConfig(
            name, hv, agent, self._strings(obj, table, "tags"), self._session(obj, table)
        )
