"""The errors an agent session can raise: a small hierarchy, one meaning each.

Callers catch `AgentError` to cover every way one VM can fail; the subclasses say
whether the agent refused (`AgentCommandError`), said nothing in time
(`AgentTimeout`), could not be reached (`AgentConnectionError`) or said nonsense
(`AgentProtocolError`).
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every failure of one agent request or session."""

    #: False when the failure happened before any request left (connecting, syncing):
    #: an action that failed so is known not to have happened.
    request_sent: bool = True


class AgentCommandError(AgentError):
    """The agent answered with an error reply; carries its class and description."""

    def __init__(self, error_class: str, desc: str, command: str = "") -> None:
        self.error_class = error_class
        self.desc = desc
        self.command = command
        super().__init__(f"{command}: {desc}" if command else desc)

    @property
    def disabled(self) -> bool:
        """The command exists but is disabled (blocked by policy, or the guest is frozen).

        qemu-ga 4.0 and later say `CommandNotFound` / "Command X has been disabled";
        earlier ones `GenericError` / "The command X has been disabled for this instance".
        """
        return "has been disabled" in self.desc and self.error_class in (
            "CommandNotFound",
            "GenericError",
            "CommandDisabled",  # qemu-ga 1.0's QError class
        )

    @property
    def not_found(self) -> bool:
        """The agent does not know the command at all."""
        return self.error_class == "CommandNotFound" and "not been found" in self.desc


class AgentTimeout(AgentError):
    """Connected, but no reply arrived within the request's timeout."""


class AgentConnectionError(AgentError):
    """No usable connection: refused, closed by the peer, or the transport failed."""


class AgentProtocolError(AgentError):
    """The agent's bytes were not a valid reply: garbage, over a cap, or the wrong shape."""


class AgentUnsupported(AgentCommandError):
    """Not sent: the agent does not offer the command (known from its guest-info or, for
    agents that list nothing, its version). Reads like the agent's own refusal."""

    request_sent = False

    def __init__(self, command: str, why: str) -> None:
        super().__init__("CommandNotFound", f"{why}; not sent", command)

    @property
    def not_found(self) -> bool:
        return True
