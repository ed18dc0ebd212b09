"""What a screen asks of the app: to open another screen or to start a flow that ends
in a guest action (freeze, thaw, power). Posted by the screen, these bubble up to the
app, which handles each in one place (`QgadashApp.on_*`); screens never call the app.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.message import Message

__all__ = [
    "ConfirmFreeze",
    "ConfirmThaw",
    "DismissThawError",
    "JumpTo",
    "OpenDetails",
    "OpenFiles",
    "OpenJump",
    "OpenPower",
]


class OpenDetails(Message):
    """Show a VM's details, on `tab`."""

    def __init__(self, vm_id: str, tab: str = "overview") -> None:
        super().__init__()
        self.vm_id = vm_id
        self.tab = tab


class OpenFiles(Message):
    """Show a VM's files."""

    def __init__(self, vm_id: str) -> None:
        super().__init__()
        self.vm_id = vm_id


class OpenJump(Message):
    """Ask for a VM by name and go to it."""


class JumpTo(Message):
    """Back to the fleet, the cursor on `vm_id`."""

    def __init__(self, vm_id: str) -> None:
        super().__init__()
        self.vm_id = vm_id


class _OnVms(Message):
    """A flow on some VMs; `how` names them for the dialog ("3 marked VMs")."""

    def __init__(self, vm_ids: Sequence[str], how: str) -> None:
        super().__init__()
        self.vm_ids = list(vm_ids)
        self.how = how


class ConfirmFreeze(_OnVms):
    """The freeze dialog (deadline, keepers; Cancel first), then the freeze."""


class ConfirmThaw(_OnVms):
    """The thaw dialog, then the thaw."""


class OpenPower(_OnVms):
    """The power dialog (shutdown, reboot, halt, suspend), then the action."""


class DismissThawError(Message):
    """Forget a VM's "thaw failed" mark, once the operator has dealt with it."""

    def __init__(self, vm_id: str) -> None:
        super().__init__()
        self.vm_id = vm_id
