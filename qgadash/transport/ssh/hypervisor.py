"""A hypervisor reached over SSH: globs expanded there, one connection for all its VMs."""

from __future__ import annotations

from qgadash.agent.codec import DEFAULT_MAX_REPLY
from qgadash.agent.errors import AgentConnectionError
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
        return [DiscoveredAgent(vm_name_for_socket(p), p) for p in parse_discovery_output(stdout)]

    def endpoint(self, address: str) -> SshEndpoint:
        return SshEndpoint(self, address)

    async def close(self) -> None:
        await self.connection.close()
