"""Real QEMU guests running the real qemu-ga, for tests (see README.md).

Public API::

    from tests.guests import GuestImage, ensure_image, Guest, GuestSpec, start_guests

The pytest fixtures live in ``tests.guests.fixtures`` (register it as a plugin).
"""

from .agent import AgentError, AgentTimeout, RawAgent, open_agent, wait_for_agent
from .image import (
    KNOWN_FILES,
    OS_RELEASE,
    GuestImage,
    GuestImageError,
    cache_root,
    ensure_image,
    missing_prerequisites,
)
from .qmp import QMPError, qmp_command
from .vm import Guest, GuestError, GuestSpec, live_guests, select_accel, start_guests

__all__ = [
    "KNOWN_FILES",
    "OS_RELEASE",
    "AgentError",
    "AgentTimeout",
    "Guest",
    "GuestError",
    "GuestImage",
    "GuestImageError",
    "GuestSpec",
    "QMPError",
    "RawAgent",
    "cache_root",
    "ensure_image",
    "live_guests",
    "missing_prerequisites",
    "open_agent",
    "qmp_command",
    "select_accel",
    "start_guests",
    "wait_for_agent",
]
