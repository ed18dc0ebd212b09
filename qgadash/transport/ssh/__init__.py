"""Agents on a remote hypervisor, reached over one SSH connection (asyncssh).

Split by concern, each module with one job:

- `connection.py`: the one connection per hypervisor, shared by all its VMs, opened on
  first use, reopened with backoff, its failures as hypervisor states;
- `hostkeys.py`: known_hosts checking's words (which file, which line);
- `endpoints.py`: one VM's agent as a channel on that connection (socket, exec, sudo,
  tcp);
- `diagnosis.py`: the hypervisor's shell asked why a channel would not open;
- `hypervisor.py`: the `Hypervisor` the fleet uses (discovery, endpoints, thaw keeper).

The names below are the package's public face; import them from here.
"""

from qgadash.transport.ssh.connection import (
    COMMAND_TIMEOUT,
    CONNECTS_PER_TARGET,
    DEFAULT_MAX_SESSIONS,
    SshConnection,
    SshTarget,
)
from qgadash.transport.ssh.endpoints import RemoteAgentCaller, SshEndpoint
from qgadash.transport.ssh.hostkeys import host_key_message, matching_known_hosts_lines
from qgadash.transport.ssh.hypervisor import DEFAULT_SUDO_WRAPPER, VIAS, SshHypervisor

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECTS_PER_TARGET",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SUDO_WRAPPER",
    "VIAS",
    "RemoteAgentCaller",
    "SshConnection",
    "SshEndpoint",
    "SshHypervisor",
    "SshTarget",
    "host_key_message",
    "matching_known_hosts_lines",
]
