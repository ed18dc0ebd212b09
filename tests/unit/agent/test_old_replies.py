"""Replies of old agents read defensively (issue 12): each was misread before."""

from __future__ import annotations

from qgadash.agent.errors import AgentCommandError
from qgadash.agent.replies import (
    FREEZE_STATUS_BODIES,
    FreezeState,
    parse_fsfreeze_status,
    parse_info,
)


def test_qemu_ga_1_0s_guest_info_lists_no_commands_so_its_version_says() -> None:
    info = parse_info({"version": "1.0"})
    assert info.offers("guest-fsfreeze-freeze") and info.enabled("guest-fsfreeze-status")
    assert not info.offers("guest-sync-delimited")  # 1.1
    assert not info.offers("guest-network-get-interfaces")  # 1.1
    assert not info.offers("guest-exec")  # 2.5


def test_without_success_response_the_schema_says_which_commands_answer_nothing() -> None:
    """qemu-ga before 1.7 lists name and enabled only."""
    info = parse_info(
        {
            "version": "1.2.0",
            "supported_commands": [
                {"name": "guest-shutdown", "enabled": True},
                {"name": "guest-ping", "enabled": True},
            ],
        }
    )
    by_name = {c.name: c for c in info.commands}
    assert by_name["guest-shutdown"].success_response is False
    assert by_name["guest-ping"].success_response is True


def test_an_old_agents_error_freeze_status_is_unknown_not_nonsense() -> None:
    """GuestFsfreezeStatus had a third value, "error", up to qemu-ga 1.0."""
    assert parse_fsfreeze_status("error") is FreezeState.UNKNOWN
    assert FREEZE_STATUS_BODIES[b'"error"'] is FreezeState.UNKNOWN


def test_a_command_disabled_on_a_2_x_agent_reads_as_disabled() -> None:
    """Before 4.0: GenericError, "The command X has been disabled for this instance"."""
    error = AgentCommandError(
        "GenericError", "The command guest-exec has been disabled for this instance", "guest-exec"
    )
    assert error.disabled and not error.not_found
