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
        offline = self._offline_cpus or set()
        return [
            {"online": cpu not in offline, "can-offline": cpu != 0, "logical-id": cpu}
            for cpu in reversed(range(self._profile.vcpus))
        ]

    def _cmd_set_vcpus(self, args: dict[str, object]) -> object:
        """qmp_guest_set_vcpus: each in turn, stopping at the first that fails; the
        error only if none was processed, else the count processed."""
        vcpus = args["vcpus"]
        assert isinstance(vcpus, list)
        if not vcpus:
            raise CommandError("Parameter 'vcpus' expects non-empty list")
        processed = 0
        for i, entry in enumerate(vcpus):
            assert isinstance(entry, dict)
            cpu = entry.get("logical-id")
            online = entry.get("online")
            if not isinstance(cpu, int) or isinstance(cpu, bool):
                raise CommandError(f"Parameter 'vcpus[{i}].logical-id' is missing")
            if not isinstance(online, bool):
                raise CommandError(f"Parameter 'vcpus[{i}].online' is missing")
            try:
                self._transfer_vcpu(cpu, online)
            except CommandError:
                if processed == 0:
                    raise
                break
            processed += 1
        return processed

    def _transfer_vcpu(self, cpu: int, online: bool) -> None:
        if not 0 <= cpu < self._profile.vcpus:
            raise CommandError(
                f'open("/sys/devices/system/cpu/cpu{cpu}/"): No such file or directory'
            )
        if cpu == 0:  # no "online" file: cpu0 stays online ("re-onlining" succeeds)
            if not online:
                raise CommandError(f"logical processor #{cpu} can't be offlined")
            return
        if self._offline_cpus is None:
            self._offline_cpus = set()
        if online:
            self._offline_cpus.discard(cpu)
        else:
            self._offline_cpus.add(cpu)

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

    def _users(self) -> set[str]:
        return {"root", "ops"} | {u.name for u in self._profile.users}

    def _cmd_set_password(self, args: dict[str, object]) -> object:
        """qmp_guest_set_user_password: checks, then chpasswd (which fails for a user
        the guest does not have)."""
        password = args["password"]
        username = args["username"]
        assert isinstance(password, str) and isinstance(username, str)
        raw = b64decode(password)
        if b"\n" in raw.split(b"\0", 1)[0]:
            raise CommandError("forbidden characters in raw password")
        if "\n" in username or ":" in username:
            raise CommandError("forbidden characters in username")
        if username not in self._users():
            raise CommandError("child process has failed to set user password")
        return {}

    def _home(self, args: dict[str, object]) -> tuple[str, str]:
        username = args["username"]
        assert isinstance(username, str)
        if username not in self._users():
            raise CommandError(f"failed to lookup user '{username}': Success")
        home = "/root" if username == "root" else f"/home/{username}"
        return username, f"{home}/.ssh/authorized_keys"

    def _ssh_keys(self, args: dict[str, object]) -> list[str]:
        """The user's keys; their authorized_keys must exist (a read fails otherwise)."""
        username, path = self._home(args)
        keys = self._keys.get(username) if self._keys is not None else None
        if keys is None:
            raise CommandError(
                f"failed to read '{path}': Failed to open file \u201c{path}\u201d:"
                " No such file or directory"
            )
        return keys

    def _cmd_ssh_get(self, args: dict[str, object]) -> object:
        return {"keys": list(self._ssh_keys(args))}

    def _cmd_ssh_add(self, args: dict[str, object]) -> object:
        username, _ = self._home(args)
        new = args["keys"]
        assert isinstance(new, list)
        for key in new:
            if not key or str(key).startswith("#"):
                raise CommandError(f"invalid OpenSSH public key: '{key}'")
        if self._keys is None:
            self._keys = {}
        keys = self._keys.setdefault(username, [])  # add creates ~/.ssh and the file
        if args.get("reset"):
            keys.clear()
        keys.extend(str(k) for k in new if k not in keys)
        return {}

    def _cmd_ssh_remove(self, args: dict[str, object]) -> object:
        keys = self._ssh_keys(args)
        gone = args["keys"]
        assert isinstance(gone, list)
        for key in gone:
            if not key or str(key).startswith("#"):
                raise CommandError(f"invalid OpenSSH public key: '{key}'")
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
