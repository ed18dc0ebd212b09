"""Guests of a libvirt host, reached through libvirt: its own verbs, its domain states.

libvirtd holds each guest's agent socket, so its guests are reached through libvirt or
not at all. Commands go through the hypervisor's long-lived virsh processes
(`virsh.py`): libvirt's own verb where one exists (`libvirt_verbs.py`; no taint),
`qemu-agent-command` only for the rest. Each domain's state comes from libvirt's
lifecycle events (`libvirt_events.py`).

Over 500 lines because each agent command libvirt has a verb for (guestinfo, domtime,
domfsfreeze, set-user-password, ...) is mapped here, beside the caller that chooses
between a verb and qemu-agent-command; the virsh process machinery is in virsh.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shlex
from collections.abc import Sequence
from typing import Any

from qgadash.agent.client import (
    AgentCaller,
    AgentTraits,
    NoReplyOutcome,
    Request,
    unsupported_reason,
)
from qgadash.agent.codec import DEFAULT_MAX_REPLY
from qgadash.agent.errors import (
    AgentCommandError,
    AgentConnectionError,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnsupported,
)
from qgadash.agent.policy import changes_guest, libvirt_verb
from qgadash.agent.replies import AgentInfo, parse_info
from qgadash.transport import libvirt_verbs as verbs
from qgadash.transport.base import DiscoveredAgent, HypervisorState, ThawKeeper
from qgadash.transport.keeper import RemoteThawKeeper, ThawRoute
from qgadash.transport.libvirt_events import DomainWatch, Listener, parse_list_all
from qgadash.transport.shell import sh_command
from qgadash.transport.ssh import SshConnection, SshTarget
from qgadash.transport.virsh import (
    AGENT_TIMEOUT_TTL,
    DEFAULT_MAX_SHELLS,
    DEFAULT_URI,
    DOMAIN_UUID,
    START_TIMEOUT,
    VIRSH_ENV,
    VIRSH_GRACE,
    VirshPool,
    clean_vm_name,
    command_output,
    libvirt_error,
    virsh_quote,
)

__all__ = [
    "DEFAULT_URI",
    "LibvirtCaller",
    "LibvirtEndpoint",
    "LibvirtHypervisor",
    "clean_vm_name",
    "command_output",
    "libvirt_error",
    "virsh_quote",
]


class LibvirtCaller:
    """AgentCaller for one domain, through the hypervisor's virsh pool.

    libvirt syncs with the agent itself before each command (with guest-sync, and
    never a request id, so agents of every era understand it). `close()` does nothing:
    the virsh processes are the hypervisor's, shared by all its domains. `traits` keeps
    the agent's last guest-info, so a command it lacks is refused here, not sent.
    """

    def __init__(
        self,
        link: LibvirtHypervisor,
        domain: str,
        label: str,
        traits: AgentTraits | None = None,
    ) -> None:
        self._link = link
        self._domain = domain
        self._label = label
        self._traits = traits if traits is not None else AgentTraits()
        self._info: tuple[Any, AgentInfo | None] = (None, None)

    @property
    def closed(self) -> bool:
        return self._link.closed

    @property
    def note(self) -> str | None:
        """Set once a command libvirt has no verb for went through `qemu-agent-command`:
        libvirt then marks the domain tainted (custom-ga-command) until it restarts."""
        return self._link.taints.get(self._domain)

    async def call(self, name: str, args: dict[str, Any] | None = None, *, timeout: float) -> Any:
        if changes_guest(name, args):
            why = unsupported_reason(self._agent_info(), name)
            if why is not None:
                raise AgentUnsupported(name, why)
        seconds = max(1, math.ceil(timeout))
        if libvirt_verb(name) is not None:
            flags = await self._link.guestinfo_flags(seconds + VIRSH_GRACE)
            if name not in verbs.GUESTINFO_FLAGS or verbs.GUESTINFO_FLAGS[name] in flags:
                return await self._verb(name, args, seconds)
        return await self.call_raw(name, args, seconds)

    async def call_raw(self, name: str, args: dict[str, Any] | None, seconds: int) -> Any:
        """Through `qemu-agent-command`: libvirt taints the domain (see `note`)."""
        request: dict[str, Any] = {"execute": name}
        if args:
            request["arguments"] = args
        command = (
            f"qemu-agent-command --domain {virsh_quote(self._domain)} --timeout {seconds} "
            f"--cmd {virsh_quote(json.dumps(request, separators=(',', ':')))}"
        )
        self._link.taints.setdefault(
            self._domain,
            f"libvirt marked this domain tainted (custom-ga-command): {name} has no libvirt "
            "verb and went through qemu-agent-command",
        )
        output = await self._link.pool.run(command, seconds + VIRSH_GRACE)
        value = self._reply(name, output)
        if name == "guest-info":
            self._traits.info = value
        return value

    async def _virsh(self, verb: str, args: Sequence[str], name: str, seconds: int) -> str:
        """Run `verb --domain D ARGS`; its output, or the agent error its `error:` says."""
        line = " ".join(
            [verb, "--domain", virsh_quote(self._domain), *(virsh_quote(a) for a in args)]
        )
        output = await self._link.pool.run(line, seconds + VIRSH_GRACE)
        if any(text.startswith("error:") for text in output.splitlines()):
            raise libvirt_error(self._label, name, output)
        return output

    async def _verb(self, name: str, args: dict[str, Any] | None, seconds: int) -> Any:
        """One command through libvirt's own verb (agent/policy.py names it)."""
        if name in verbs.GUESTINFO_FLAGS:
            output = await self._virsh("guestinfo", [verbs.GUESTINFO_FLAGS[name]], name, seconds)
            try:
                return verbs.guestinfo_reply(name, verbs.parse_typed_params(output))
            except AgentCommandError:
                # libvirt leaves out what the agent refused; frozen is the usual reason.
                if (await self._domtime(["guest-fsfreeze-status"], seconds))[0] == "frozen":
                    raise AgentCommandError(
                        "CommandNotFound",
                        f"Command {name} has been disabled: the agent is in frozen state",
                        name,
                    ) from None
                raise
        if name == "guest-ping":
            # Any answer from the agent is a pong, a refusal too (frozen, or too old to
            # know guest-get-time); no answer is libvirt's timeout or connection error.
            with contextlib.suppress(AgentCommandError):
                await self._virsh("domtime", [], name, seconds)
            return {}
        if name in verbs.DOMTIME_COMMANDS:
            value = (await self._domtime([name], seconds))[0]
            if isinstance(value, AgentError):
                raise value
            return value
        if name in ("guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list"):
            # A virsh of its own: the shells' -q would hide the count it answers with.
            argv = ["domfsfreeze", "--domain", self._domain, *verbs.freeze_arguments(name, args)]
            output = await self._link.virsh_once(argv, seconds + VIRSH_GRACE)
            if any(text.startswith("error:") for text in output.splitlines()):
                raise libvirt_error(self._label, name, output)
            return verbs.fs_count(output, "domfsfreeze")
        if name == "guest-fsfreeze-thaw":
            argv = ["domfsthaw", "--domain", self._domain]
            output = await self._link.virsh_once(argv, seconds + VIRSH_GRACE)
            if any(text.startswith("error:") for text in output.splitlines()):
                raise libvirt_error(self._label, name, output)
            return verbs.fs_count(output, "domfsthaw")
        if name == "guest-set-time":
            await self._virsh("domtime", verbs.set_time_arguments(args), name, seconds)
            return {}
        if name == "guest-set-user-password":
            await self._virsh("set-user-password", verbs.password_arguments(args), name, seconds)
            return {}
        # The no-reply commands (shutdown, suspend) go through call_no_reply.
        return await self.call_raw(name, args, seconds)

    async def _domtime(self, names: Sequence[str], seconds: int) -> list[Any | AgentError]:
        """guest-get-time and guest-fsfreeze-status from one `domtime`."""
        error: AgentCommandError | None = None
        now: int | None = None
        try:
            now = verbs.domtime_seconds(
                await self._virsh("domtime", [], "guest-get-time", seconds)
            )
        except AgentCommandError as exc:
            error = exc
        results: list[Any | AgentError] = []
        for name in names:
            if name == "guest-fsfreeze-status":
                try:
                    results.append(verbs.freeze_from_domtime(error))
                except AgentCommandError as exc:
                    results.append(exc)
            else:
                results.append(error if now is None else now * 1_000_000_000)
        return results

    def _agent_info(self) -> AgentInfo | None:
        raw = self._traits.info
        cached_raw, info = self._info
        if raw is cached_raw:
            return info
        try:
            info = parse_info(raw) if raw is not None else None
        except AgentError:
            info = None
        self._info = (raw, info)
        return info

    def _reply(self, name: str, output: str) -> Any:
        for line in output.splitlines():
            if line.startswith("{"):
                try:
                    reply = json.loads(line)
                except ValueError:
                    raise AgentProtocolError(f"{self._label}: libvirt returned bad JSON") from None
                if isinstance(reply, dict) and "return" in reply:
                    return reply["return"]
                if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
                    error = reply["error"]
                    raise AgentCommandError(
                        str(error.get("class", "GenericError")), str(error.get("desc", "")), name
                    )
                raise AgentProtocolError(f"{self._label}: reply to {name} has no return value")
        raise libvirt_error(self._label, name, output)

    async def call_many(
        self, requests: Sequence[Request], *, timeout: float
    ) -> list[Any | AgentError]:
        """A poll's reads through libvirt's verbs: one `guestinfo` for everything it
        answers, one `domtime` for the time and the freeze state, the rest one after the
        other (libvirt runs one agent command per domain at a time). A read with no
        libvirt verb (guest-info, guest-get-load) is not sent: it would taint the domain.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seconds = max(1, math.ceil(timeout))
        flags = await self._link.guestinfo_flags(seconds + VIRSH_GRACE)
        names = [name for name, _ in requests]
        results: dict[int, Any | AgentError] = {}
        groups = verbs.guestinfo_groups(names, flags)
        if groups:
            params: dict[str, str] | None = None
            failure: AgentCommandError | None = None
            try:
                params = verbs.parse_typed_params(
                    await self._virsh("guestinfo", groups, "guestinfo", seconds)
                )
            except AgentCommandError as exc:
                failure = exc
            for i, name in enumerate(names):
                if verbs.GUESTINFO_FLAGS.get(name) in groups:
                    try:
                        results[i] = (
                            verbs.guestinfo_reply(name, params) if params is not None else failure
                        )
                    except AgentCommandError as exc:
                        results[i] = exc
        timed = [i for i, name in enumerate(names) if name in verbs.DOMTIME_COMMANDS]
        if timed:
            answers = await self._domtime([names[i] for i in timed], seconds)
            results.update(zip(timed, answers, strict=True))
        for i, (name, args) in enumerate(requests):
            if i in results:
                continue
            if libvirt_verb(name) is None and not changes_guest(name, args):
                results[i] = AgentCommandError(
                    "GenericError",
                    "not asked through libvirt: it has no verb for this, and "
                    "qemu-agent-command would taint the domain",
                    name,
                )
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AgentTimeout(f"{self._label}: no time left for {name} within {timeout:g} s")
            try:
                results[i] = await self.call(name, args, timeout=remaining)
            except AgentCommandError as exc:
                results[i] = exc
        return [results[i] for i in range(len(requests))]

    async def call_many_raw(
        self, requests: Sequence[Request], *, timeout: float, read_only: bool = False
    ) -> list[Any | bytes | AgentError]:
        """`call_many`: virsh prints values, there are no reply bytes to keep undecoded."""
        return await self.call_many(requests, timeout=timeout)

    async def call_no_reply(
        self, name: str, args: dict[str, Any] | None = None, *, grace: float
    ) -> NoReplyOutcome:
        """Shutdown and suspend through libvirt's own agent paths (docs/ssh.md)."""
        why = unsupported_reason(self._agent_info(), name)
        if why is not None:
            raise AgentUnsupported(name, why)
        domain = virsh_quote(self._domain)
        wait = max(1.0, grace) * 4 + 30
        if name == "guest-shutdown":
            mode = (args or {}).get("mode", "powerdown")
            if mode == "powerdown":
                command = f"shutdown --domain {domain} --mode agent"
            elif mode == "reboot":
                command = f"reboot --domain {domain} --mode agent"
            elif mode == "halt":
                return await self._halt(args, grace)
            else:
                raise AgentCommandError("GenericError", f"unknown shutdown mode {mode!r}", name)
        elif name.startswith("guest-suspend-"):
            target = {"ram": "mem", "disk": "disk", "hybrid": "hybrid"}.get(
                name.removeprefix("guest-suspend-")
            )
            if target is None:
                raise AgentCommandError("CommandNotFound", f"unknown command {name}", name)
            command = f"dompmsuspend --domain {domain} --target {target}"
        else:
            raise AgentCommandError(
                "GenericError", f"{name} answers on success; use call() for it", name
            )
        output = await self._link.pool.run(command, wait)
        if any(line.startswith("error:") for line in output.splitlines()):
            raise libvirt_error(self._label, name, output)
        return NoReplyOutcome.NO_ERROR

    async def _halt(self, args: dict[str, Any] | None, grace: float) -> NoReplyOutcome:
        try:
            await self.call("guest-shutdown", args, timeout=max(1.0, grace))
        except AgentTimeout:
            return NoReplyOutcome.NO_ERROR
        except AgentConnectionError:
            return NoReplyOutcome.CHANNEL_CLOSED
        return NoReplyOutcome.NO_ERROR

    async def close(self) -> None:
        return None


class LibvirtEndpoint:
    """One domain's agent, through libvirt."""

    def __init__(self, link: LibvirtHypervisor, domain: str) -> None:
        self._link = link
        self.domain = domain
        self.traits = AgentTraits()  # the agent's last guest-info, across callers

    @property
    def label(self) -> str:
        name = self._link.domain_names.get(self.domain, self.domain)
        return f"{self._link.name}:libvirt:{name}"

    async def connect(self, timeout: float) -> AgentCaller:
        """Lower libvirt's agent timeout for the domain, then ping its agent.

        The timeout is set again after AGENT_TIMEOUT_TTL seconds (a restarted domain
        forgets it) or when the session's timeout changes; per-poll sessions pay only
        the ping.
        """
        label = f"{self._link.name}/{self._link.domain_names.get(self.domain, self.domain)}"
        seconds = max(1, math.ceil(timeout))
        now = asyncio.get_running_loop().time()
        known = self._link.agent_timeouts.get(self.domain)
        if known is None or known[0] != seconds or now - known[1] > AGENT_TIMEOUT_TTL:
            output = await self._link.pool.run(
                f"guest-agent-timeout --domain {virsh_quote(self.domain)} --timeout {seconds}",
                seconds + VIRSH_GRACE,
            )
            if output.strip():
                raise libvirt_error(label, "guest-agent-timeout", output)
            self._link.agent_timeouts[self.domain] = (seconds, now)
        caller = LibvirtCaller(self._link, self.domain, label, self.traits)
        try:
            await caller.call("guest-ping", timeout=timeout)
        except AgentConnectionError:
            # Gone, stopped or restarted: set the timeout again next time.
            self._link.agent_timeouts.pop(self.domain, None)
            raise
        return caller


class LibvirtHypervisor:
    """A libvirt host, local or over SSH: every running domain, through virsh."""

    def __init__(
        self,
        name: str,
        ssh: SshTarget | None = None,
        *,
        uri: str = DEFAULT_URI,
        max_reply: int = DEFAULT_MAX_REPLY,
        max_shells: int = DEFAULT_MAX_SHELLS,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 3.0,
        keepalive_count_max: int = 3,
    ) -> None:
        self._name = name
        self.uri = uri
        self.ssh_target = ssh
        self.connection: SshConnection | None = None
        if ssh is not None:
            self.connection = SshConnection(
                name,
                ssh,
                connect_timeout=connect_timeout,
                keepalive_interval=keepalive_interval,
                keepalive_count_max=keepalive_count_max,
            )
        # virsh prints the reply as one JSON line, plus its prompt and echoes.
        self.pool = VirshPool(name, uri, self.connection, max_shells, max_reply + 64 * 1024)
        self.domain_names: dict[str, str] = {}
        # domain -> (seconds, when set) of the last guest-agent-timeout sent for it
        self.agent_timeouts: dict[str, tuple[int, float]] = {}
        # domain -> why libvirt marked it tainted (a raw qemu-agent-command was sent)
        self.taints: dict[str, str] = {}
        self._guestinfo: frozenset[str] | None = None
        self.watch = DomainWatch(self)  # domain states, from libvirt's lifecycle events
        self.closed = False
        self._keeper: RemoteThawKeeper | None = None
        if self.connection is not None:
            self._keeper = RemoteThawKeeper(self.connection, ThawRoute("virsh", uri))

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> HypervisorState:
        if self.connection is not None and self.connection.state != HypervisorState.CONNECTED:
            return self.connection.state
        if self.pool.error is not None:
            return HypervisorState.UNREACHABLE
        return HypervisorState.LOCAL if self.connection is None else HypervisorState.CONNECTED

    @property
    def error(self) -> str | None:
        if self.connection is not None and self.connection.state != HypervisorState.CONNECTED:
            return self.connection.error
        return self.pool.error

    @property
    def keeper(self) -> ThawKeeper | None:
        """Over SSH, a `virsh domfsthaw` armed on the hypervisor; None for this machine,
        whose own keeper process serves its domains."""
        return self._keeper

    async def virsh_once(self, argv: Sequence[str], timeout: float) -> str:
        """One `virsh -c URI ARGV` of its own (not quiet), stdout and stderr together.

        For what the shells' -q would hide (domfsfreeze's and domfsthaw's counts); a
        freeze is rare enough to pay the start (~20 ms here, one exec channel remote).
        """
        try:
            async with asyncio.timeout(timeout):
                if self.connection is None:
                    try:
                        process = await asyncio.create_subprocess_exec(
                            "virsh", "-c", self.uri, *argv,
                            stdin=asyncio.subprocess.DEVNULL,
                            stdout=asyncio.subprocess.PIPE,
                            stderr=asyncio.subprocess.STDOUT,
                            env={**os.environ, **VIRSH_ENV},
                        )  # fmt: skip
                    except FileNotFoundError:
                        raise AgentConnectionError(
                            f"{self.name}: virsh is not installed (Debian package libvirt-clients)"
                        ) from None
                    try:
                        out, _ = await process.communicate()
                    finally:
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
                    return out.decode("utf-8", "replace")
                env = " ".join(f"{k}={v}" for k, v in VIRSH_ENV.items())
                words = " ".join(shlex.quote(a) for a in ["-c", self.uri, *argv])
                result = await self.connection.run(
                    sh_command(f"{env} exec virsh {words} 2>&1"), timeout
                )
                out = result.stdout if isinstance(result.stdout, bytes) else b""
                return out.decode("utf-8", "replace")
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: virsh {argv[0]} did not finish within {timeout:g} s"
            ) from None

    async def guestinfo_flags(self, timeout: float) -> frozenset[str]:
        """The report flags of this libvirt's `guestinfo` (asked once; empty before 5.7)."""
        if self._guestinfo is None:
            self._guestinfo = verbs.guestinfo_flags(await self.pool.run("help guestinfo", timeout))
        return self._guestinfo

    async def discover(self, patterns: list[str]) -> list[DiscoveredAgent]:
        """Every domain, shut off ones too, with its state (`domain_state`); `patterns`
        do not apply to libvirt."""
        output = await self.pool.run("list --all --uuid --name", START_TIMEOUT)
        found: list[DiscoveredAgent] = []
        names: dict[str, str] = {}
        for line in output.splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2 and DOMAIN_UUID.match(parts[0]):
                names[parts[0]] = parts[1]
                found.append(DiscoveredAgent(clean_vm_name(parts[1]), parts[0]))
            elif line.startswith("error:"):
                raise libvirt_error(self.name, "list", output)
        self.domain_names = names
        self.watch.set_states(parse_list_all(await self.pool.run("list --all", START_TIMEOUT)))
        self.watch.start()
        return found

    @property
    def manager(self) -> str:
        return "libvirt"

    def domain_state(self, address: str) -> str | None:
        """libvirt's state of the domain (`running`, `paused`, `shut off`, `crashed`,
        `pmsuspended`, ...), None if not known."""
        return self.watch.states.get(self.domain_names.get(address, address))

    def on_domain_state(self, listener: Listener) -> None:
        """Call `listener(address, state)` whenever a domain's state changes."""
        by_name = {name: address for address, name in self.domain_names.items()}

        def relay(name: str, state: str) -> None:
            if by_name.get(name) is None:
                by_name.update({n: a for a, n in self.domain_names.items()})
            listener(by_name.get(name, name), state)

        self.watch.listen(relay)

    def endpoint(self, address: str) -> LibvirtEndpoint:
        """`address` is a domain UUID (as discovered) or name."""
        return LibvirtEndpoint(self, address)

    async def close(self) -> None:
        self.closed = True
        await self.watch.close()
        await self.pool.close()
        if self.connection is not None:
            await self.connection.close()
