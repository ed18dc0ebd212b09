"""The dialogs: every one that leads to a change on a guest opens with the focus on
Cancel, lists the VMs that will get the action and those skipped (with the reason, from
`engine.plan`), and offers only what the agents can do.

- `confirm`: freeze and thaw (deadline, keepers, Windows' VSS limit);
- `power`: shutdown, reboot, halt, suspend;
- `action_run`: an action's progress and every VM's outcome (and output, for exec);
- `dialogs`: yes/no questions and the quit dialog;
- `prompt`: a few labelled fields (a path, a command line, a user).
"""

from qgadash.ui.screens.modals.action_run import ActionRunScreen, describe_result
from qgadash.ui.screens.modals.confirm import (
    ConfirmActionScreen,
    FreezeChoice,
    keeper_plan_text,
    plan_text,
)
from qgadash.ui.screens.modals.dialogs import MessageScreen, QuitScreen, YesNoScreen, quit_text
from qgadash.ui.screens.modals.power import POWER_OPTIONS, PowerChoice, PowerScreen
from qgadash.ui.screens.modals.prompt import PromptScreen

__all__ = [
    "POWER_OPTIONS",
    "ActionRunScreen",
    "ConfirmActionScreen",
    "FreezeChoice",
    "MessageScreen",
    "PowerChoice",
    "PowerScreen",
    "PromptScreen",
    "QuitScreen",
    "YesNoScreen",
    "describe_result",
    "keeper_plan_text",
    "plan_text",
    "quit_text",
]
