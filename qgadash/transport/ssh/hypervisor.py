"""A hypervisor reached over SSH: globs expanded there, one connection for all its VMs."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.agent.codec import DEFAULT_MAX_REPLY
from qgadash.agent.errors import AgentConnectionError, AgentError
from qgadash.transport import proxmox
from qgadash.transport.base import DiscoveredAgent, HypervisorState, ThawKeeper
from qgadash.transport.discovery import vm_name_for_socket
from qgadash.transport.shell import discovery_script, parse_discovery_output, sh_command
from qgadash.transport.ssh.connection import DEFAULT_MAX_SESSIONS, SshConnection, SshTarget
from qgadash.transport.ssh.diagnosis import last_line
from qgadash.transport.ssh.endpoints import SshEndpoint

VIAS = ("socket", "exec", "sudo")
DEFAULT_SUDO_WRAPPER = "/usr/local/sbin/qgadash-agent-connect"


class SshHypervisor:
    """A hypervisor reached over SSH: globs expanded there, one connection for all VMs."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        *,
        via: str = "socket",  # "socket" | "exec" | "sudo"
        max_reply: int = DEFAULT_MAX_REPLY,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 3.0,
        keepalive_count_max: int = 3,
        sudo_wrapper: str = DEFAULT_SUDO_WRAPPER,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        proxmox_configs: str = proxmox.DEFAULT_CONFIG_DIR,
    ) -> None:
        if via not in VIAS:
            raise ValueError(f"{name}: via must be one of {', '.join(VIAS)}, not {via!r}")
        self._name = name
        self.target = target
        self.via = via
        self.max_reply = max_reply
        self.sudo_wrapper = sudo_wrapper
        self.connection = SshConnection(
            name,
            target,
            connect_timeout=connect_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
            max_sessions=max_sessions,
        )
        self._keeper: ThawKeeper | None = None
        self.proxmox_configs = proxmox_configs
        # Proxmox guests by socket address (names and agent settings from their configs)
        self.proxmox_guests: dict[str, proxmox.PveGuest] = {}
        self._state_listeners: list[Callable[[str, str], None]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> HypervisorState:
        return self.connection.state

    @property
    def error(self) -> str | None:
        return self.connection.error

    @property
    def keeper(self) -> ThawKeeper | None:
        """A thaw armed on the hypervisor over this connection (`transport/keeper.py`)."""
        if self._keeper is None:
            # Imported here: the keeper module builds on this one.
            from qgadash.transport.keeper import RemoteThawKeeper, ThawRoute

            route = (
                ThawRoute("sudo", self.sudo_wrapper) if self.via == "sudo" else ThawRoute("socat")
            )
            self._keeper = RemoteThawKeeper(self.connection, route)
        return self._keeper

    async def discover(self, patterns: list[str]) -> list[DiscoveredAgent]:
        """Sockets matching the globs on the hypervisor (one command there)."""
        if not patterns:
            return []
        result = await self.connection.run(sh_command(discovery_script(patterns)))
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        if result.exit_status not in (0, None):
            stderr = result.stderr if isinstance(result.stderr, bytes) else b""
            detail = last_line(stderr.decode("utf-8", "replace"))
            raise AgentConnectionError(
                f"{self.name}: listing agent sockets failed: "
                f"{detail or f'exit status {result.exit_status}'}"
            )
        paths = parse_discovery_output(stdout)
        if not any(proxmox.vmid_of_socket(p) for p in paths):
            return [DiscoveredAgent(vm_name_for_socket(p), p) for p in paths]
        return await self._proxmox_guests(paths)

    async def _proxmox_guests(self, paths: list[str]) -> list[DiscoveredAgent]:
        """Proxmox sockets named after their guests' configs; running guests whose config
        disables the agent listed too (their endpoint says so instead of timing out)."""
        run_dir = next(p for p in paths if proxmox.vmid_of_socket(p)).rpartition("/")[0]
        try:
            result = await self.connection.run(
                sh_command(proxmox.configs_script(self.proxmox_configs, run_dir))
            )
            out = result.stdout if isinstance(result.stdout, bytes) else b""
            guests = proxmox.parse_configs_output(out)
        except AgentError:
            guests = {}  # names stay vmids: the configs are optional, the agents are not
        found: list[DiscoveredAgent] = []
        known: dict[str, proxmox.PveGuest] = {}
        for path in paths:
            vmid = proxmox.vmid_of_socket(path)
            guest = guests.get(vmid) if vmid else None
            if guest is None:
                found.append(DiscoveredAgent(vm_name_for_socket(path), path))
                continue
            known[path] = guest
            found.append(DiscoveredAgent(guest.title, path))
        for vmid, guest in sorted(guests.items(), key=lambda item: int(item[0])):
            path = f"{run_dir}/{vmid}.qga"
            # Listed without a socket: running with the agent disabled, or stopped (its
            # row says "proxmox: stopped", as a shut-off libvirt domain's does).
            stopped = guest.running is False
            if path not in known and (stopped or (guest.running and not guest.agent_enabled)):
                known[path] = guest
                found.append(DiscoveredAgent(guest.title, path))
        before = {a: self.domain_state(a) for a in self.proxmox_guests}
        self.proxmox_guests = known
        for address in known:
            state = self.domain_state(address)
            if state is not None and before.get(address) not in (None, state):
                for listener in list(self._state_listeners):
                    listener(address, state)
        return found

    # Proxmox as the guests' manager (transport.base.ManagedHypervisor): a guest's state
    # from its pidfile, read at each discovery (Proxmox has no event stream here).
    @property
    def manager(self) -> str:
        return "proxmox"

    def domain_state(self, address: str) -> str | None:
        guest = self.proxmox_guests.get(address)
        if guest is None or guest.running is None:
            return None
        return "running" if guest.running else "stopped"

    def on_domain_state(self, listener: Callable[[str, str], None]) -> None:
        self._state_listeners.append(listener)

    def agent_disabled(self, address: str) -> str | None:
        """Why `address` has no agent to talk to: its Proxmox config disables it, or the
        guest is stopped (no channel is opened to find that out)."""
        guest = self.proxmox_guests.get(address)
        if guest is None:
            return None
        if guest.running is False:
            return f"{self.name}/{guest.title}: proxmox: stopped (no QEMU process)"
        if guest.agent_enabled:
            return None
        return proxmox.disabled_message(self.name, guest, self.proxmox_configs)

    def endpoint(self, address: str) -> SshEndpoint:
        return SshEndpoint(self, address)

    async def close(self) -> None:
        await self.connection.close()
