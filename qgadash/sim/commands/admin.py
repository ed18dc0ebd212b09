"""Guest administration: the clock, vCPUs, memory blocks, passwords, SSH keys."""

from __future__ import annotations

from collections.abc import Callable

from qgadash.sim.commands.schema import CommandError, b64decode
from qgadash.sim.commands.state import AgentState


class AdminCommands(AgentState):
    """The commands that change the guest's settings (not its power or files)."""

    __slots__ = ()

    def _cmd_set_time(self, args: dict[str, object]) -> object:
        when = args.get("time")
        if isinstance(when, int):
            self._drift_ns = when - int(self._wall() * 1e9)
        else:
            self._drift_ns = 0
        return {}

    def _cmd_vcpus(self, args: dict[str, object]) -> object:
        return [
            {"online": True, "can-offline": cpu != 0, "logical-id": cpu}
            for cpu in reversed(range(self._profile.vcpus))
        ]

    def _cmd_set_vcpus(self, args: dict[str, object]) -> object:
        vcpus = args["vcpus"]
        assert isinstance(vcpus, list)
        if not vcpus:
            raise CommandError("Parameter 'vcpus' expects non-empty list")
        return len(vcpus)

    def _cmd_memory_block_info(self, args: dict[str, object]) -> object:
        return {"size": 134217728}

    def _cmd_memory_blocks(self, args: dict[str, object]) -> object:
        count = min(128, self._profile.memory_bytes // 134217728)
        return [
            {"online": True, "can-offline": i != 0, "phys-index": i} for i in reversed(range(count))
        ]

    def _cmd_set_memory_blocks(self, args: dict[str, object]) -> object:
        blocks = args["mem-blks"]
        assert isinstance(blocks, list)
        return [
            {
                "phys-index": b.get("phys-index", 0) if isinstance(b, dict) else 0,
                "response": "success",
            }
            for b in blocks
        ]

    def _cmd_set_password(self, args: dict[str, object]) -> object:
        password = args["password"]
        assert isinstance(password, str)
        b64decode(password)
        return {}

    def _ssh_keys(self, args: dict[str, object]) -> list[str]:
        username = args["username"]
        assert isinstance(username, str)
        known = {"root", "ops"} | {u.name for u in self._profile.users}
        if username not in known:
            raise CommandError(f"failed to lookup user '{username}'")
        if self._keys is None:
            self._keys = {}
        return self._keys.setdefault(username, [])

    def _cmd_ssh_get(self, args: dict[str, object]) -> object:
        return {"keys": list(self._ssh_keys(args))}

    def _cmd_ssh_add(self, args: dict[str, object]) -> object:
        keys = self._ssh_keys(args)
        new = args["keys"]
        assert isinstance(new, list)
        for key in new:
            if not key or str(key).startswith("#"):
                raise CommandError(f"invalid OpenSSH public key: '{key}'")
        if args.get("reset"):
            keys.clear()
        keys.extend(str(k) for k in new if k not in keys)
        return {}

    def _cmd_ssh_remove(self, args: dict[str, object]) -> object:
        keys = self._ssh_keys(args)
        gone = args["keys"]
        assert isinstance(gone, list)
        keys[:] = [k for k in keys if k not in gone]
        return {}


HANDLERS: dict[str, Callable[[AdminCommands, dict[str, object]], object]] = {
    "guest-set-time": AdminCommands._cmd_set_time,
    "guest-get-vcpus": AdminCommands._cmd_vcpus,
    "guest-set-vcpus": AdminCommands._cmd_set_vcpus,
    "guest-get-memory-block-info": AdminCommands._cmd_memory_block_info,
    "guest-get-memory-blocks": AdminCommands._cmd_memory_blocks,
    "guest-set-memory-blocks": AdminCommands._cmd_set_memory_blocks,
    "guest-set-user-password": AdminCommands._cmd_set_password,
    "guest-ssh-get-authorized-keys": AdminCommands._cmd_ssh_get,
    "guest-ssh-add-authorized-keys": AdminCommands._cmd_ssh_add,
    "guest-ssh-remove-authorized-keys": AdminCommands._cmd_ssh_remove,
}
