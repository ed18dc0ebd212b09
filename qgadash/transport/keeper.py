"""A thaw armed on the hypervisor itself, so a freeze ends by its deadline even when this
process, its machine or its SSH link is gone (issue 11, item 3).

Everything happens over the hypervisor's existing SSH connection, one short exec each:

- `arm` writes a marker file named by the hold's token, then starts the delayed thaw:
  a transient systemd timer (`systemd-run --on-active=`) where systemd is the init
  system and we may use it (root, or a lingering user), else a detached `sleep` + thaw
  (`setsid nohup sh -c ...`);
- at the deadline the thaw runs only while the marker exists, so a disarmed keeper never
  thaws a guest someone else froze after our own thaw. It retries for up to
  `THAW_RETRY_FOR` seconds (the agent socket serves one client at a time; while another
  holds it, a connect hangs) and removes the marker once the agent confirmed the thaw;
  if it gives up, the marker stays: the thaw is still owed and `pending` says so;
- `disarm` removes the marker and stops the timer or the sleeping process.

Markers live in `/run/qgadash-keeper-0` for root and `/tmp/qgadash-keeper-UID` for
others (mode 700, refused when not ours or a symlink). Not `$XDG_RUNTIME_DIR`: logind
removes `/run/user/UID` when the user's last session ends, which a cut link does, and
the keeper would then take the missing marker for a disarm. `--user` timers need
lingering for the same reason; without it a non-root user gets the `nohup` keeper (which
logind's `KillUserProcesses=yes`, not Debian's default, would also end with the session).

How the thaw reaches the agent (`ThawRoute`): `socat` for socket paths and
`tcp:HOST:PORT`, the `sudo` wrapper for `via = "sudo"`, `virsh domfsthaw` for libvirt
domains, and `qm guest cmd VMID fsfreeze-thaw` for Proxmox sockets when running as root
where `qm` exists. A raw-socket thaw is sent after a `guest-sync-delimited`, and only a
`return` that follows the sync's own reply counts: an agent hands a reply nobody read to
the next client (protocol.md), and a stale `{"return": ...}` must not pass for our thaw.
The request carries no `id` member, which old agents reject.

Nothing guest- or config-controlled enters the scripts' text: addresses, wrapper paths,
URIs and tokens travel as positional parameters, quoted with shlex.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shlex
from dataclasses import dataclass
from typing import Protocol

from qgadash.agent.errors import AgentConnectionError, AgentError, AgentTimeout
from qgadash.transport.address import parse_tcp_address
from qgadash.transport.discovery import is_proxmox_socket, vm_name_for_socket
from qgadash.transport.shell import sh_command, socat_unix_address

__all__ = ["THAW_RETRY_FOR", "RemoteThawKeeper", "ThawRoute"]

# How long a fired keeper keeps trying to reach the agent before it gives up.
THAW_RETRY_FOR = 600
# How long `probe`'s answer is trusted (it is asked before every freeze confirmation).
PROBE_TTL = 60.0
DISARM_AFTER_FAILURE_TIMEOUT = 10.0
_TOKEN = re.compile(r"[0-9a-f]{16}")
_TCP_HOST = re.compile(r"[A-Za-z0-9._:-]+")

# Every script starts here: `$d` is the marker directory, ours and private, or the
# script has printed `unusable WHY` and exited.
_DIRECTORY = r"""umask 077
u=$(id -u)
if [ "$u" = 0 ] && [ -d /run ]; then d=/run/qgadash-keeper-0; else d=/tmp/qgadash-keeper-$u; fi
if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
  echo "unusable $d is a symbolic link or not a directory"; exit 0
fi
if [ ! -d "$d" ] && ! mkdir -m 700 "$d" 2>/dev/null && [ ! -d "$d" ]; then
  echo "unusable cannot create $d"; exit 0
fi
if [ -L "$d" ] || [ ! -O "$d" ]; then echo "unusable $d belongs to another user"; exit 0; fi
chmod 700 "$d" 2>/dev/null || { echo "unusable cannot make $d private"; exit 0; }
"""

# $1 route kind (socat | sudo | virsh), $2 the sudo wrapper or the libvirt URI.
_PROBE = r"""
for c in sleep timeout; do command -v "$c" >/dev/null 2>&1 || echo "missing $c"; done
command -v setsid >/dev/null 2>&1 || command -v nohup >/dev/null 2>&1 || echo "missing nohup"
case $1 in
socat) command -v socat >/dev/null 2>&1 || echo "missing socat" ;;
sudo)
  if ! command -v sudo >/dev/null 2>&1; then echo "missing sudo"
  elif [ ! -x "$2" ]; then echo "unusable the sudo wrapper $2 does not exist (see docs/ssh.md)"
  elif ! sudo -n -l "$2" >/dev/null 2>&1; then
    echo "unusable sudo -n will not run $2 for $(id -un) (see docs/ssh.md)"
  fi ;;
virsh)
  if ! command -v virsh >/dev/null 2>&1; then echo "missing virsh"
  elif ! timeout 10 virsh -c "$2" uri >/dev/null 2>&1; then
    echo "unusable virsh cannot open $2 as $(id -un)"
  fi ;;
esac
echo ok
"""

# The keeper itself. Started by `nohup` with positional parameters: $1 directory, $2
# token, $3 delay (s), $4 route kind, $5 $6 its values, $7 a Proxmox vmid or "". Started
# by systemd as `/bin/sh DIR/TOKEN.sh` (no arguments) at the deadline, with the route in
# the environment: systemd would expand `$` in a command line, never in a file or a
# value. Writes its pid to TOKEN.pid (for disarm) and the agent's last answer to
# TOKEN.last (for people wondering why it did not thaw).
_KEEPER = r"""if [ "$#" -eq 0 ]; then
  t=${0##*/}
  set -- "${0%/*}" "${t%.sh}" 0 "$QGADASH_KIND" "$QGADASH_A" "$QGADASH_B" "$QGADASH_VMID"
fi
d=$1 t=$2 delay=$3 kind=$4 a=$5 b=$6 vmid=$7
m=$d/$t s=
echo $$ > "$m.pid"
trap 'rm -f "$m.pid" "$m.sh"' EXIT
trap '[ -z "$s" ] || kill "$s" 2>/dev/null; exit 0' TERM
if [ "$delay" -gt 0 ]; then sleep "$delay" & s=$!; wait "$s"; s=; fi
if [ -n "$vmid" ] && [ "$(id -u)" = 0 ] && command -v qm >/dev/null 2>&1; then
  kind=qm a=$vmid
fi
thaw() {
  case $kind in
  virsh) out=$(timeout 30 virsh -c "$a" domfsthaw "$b" 2>&1); return ;;
  qm) out=$(timeout 30 qm guest cmd "$a" fsfreeze-thaw 2>&1); return ;;
  esac
  id=$$$1
  req=$(printf '\377{"execute":"guest-sync-delimited","arguments":{"id":%s}}' "$id")
  req=$req'{"execute":"guest-fsfreeze-thaw"}'
  if [ "$kind" = sudo ]; then
    out=$({ printf '%s\n' "$req"; sleep 5; } | timeout 15 sudo -n "$a" "$b" 2>&1)
  else
    out=$(printf '%s\n' "$req" | timeout 15 socat -t 5 - "$a" 2>&1)
  fi
  flat=$(printf '%s' "$out" | tr -d ' ')
  case $flat in *"\"return\":$id}"*) ;; *) return 1 ;; esac
  case ${flat#*"\"return\":$id}"} in *'"return"'*) return 0 ;; esac
  return 1
}
end=$(( $(date +%s) + RETRY_FOR ))
n=0
while [ -e "$m" ]; do
  n=$((n + 1))
  if thaw "$n"; then rm -f "$m" "$m.last"; exit 0; fi
  printf '%s\n' "$out" | tr -d '\377' | head -c 2000 > "$m.last"
  [ "$(date +%s)" -lt "$end" ] || exit 1
  sleep 3
done
""".replace("RETRY_FOR", str(THAW_RETRY_FOR))

# $1 the keeper script, $2 token, $3 delay, then the keeper's route: kind, a, b, vmid.
_ARM = r"""
k=$1 t=$2 delay=$3; shift 3
case $t in *[!0-9a-f]* | "") echo "error bad token"; exit 0 ;; esac
m=$d/$t
if [ -e "$m" ]; then echo "error $m exists already"; exit 0; fi
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  scope=
  if [ "$u" = 0 ]; then scope=--system
  elif [ -e "/var/lib/systemd/linger/$(id -un)" ]; then
    scope=--user; XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$u}; export XDG_RUNTIME_DIR
  fi
  if [ -n "$scope" ] && echo "systemd $scope" > "$m" && printf '%s\n' "$k" > "$m.sh" &&
    systemd-run "$scope" --quiet --collect --unit "qgadash-thaw-$t" \
      --on-active="${delay}s" --timer-property=AccuracySec=1s \
      --description="qgadash: thaw a frozen guest at its deadline" \
      --setenv="QGADASH_KIND=$1" --setenv="QGADASH_A=$2" --setenv="QGADASH_B=$3" \
      --setenv="QGADASH_VMID=$4" /bin/sh "$m.sh" >/dev/null 2>&1; then
    echo "armed systemd"; exit 0
  fi
  rm -f "$m" "$m.sh"
fi
echo nohup > "$m" || { echo "error cannot write $m"; exit 0; }
if command -v setsid >/dev/null 2>&1; then
  setsid nohup /bin/sh -c "$k" qgadash-keeper "$d" "$t" "$delay" "$@" </dev/null >/dev/null 2>&1 &
else
  nohup /bin/sh -c "$k" qgadash-keeper "$d" "$t" "$delay" "$@" </dev/null >/dev/null 2>&1 &
fi
i=0
while [ ! -e "$m.pid" ]; do
  i=$((i + 1))
  if [ "$i" -gt 250 ]; then
    rm -f "$m"; echo "error the keeper process did not start"; exit 0
  fi
  sleep 0.02 2>/dev/null || { sleep 1; i=$((i + 50)); }
done
echo "armed nohup"
"""

# $1 token.
_DISARM = r"""
t=$1; m=$d/$t
case $t in *[!0-9a-f]* | "") echo "error bad token"; exit 0 ;; esac
kind=$(cat "$m" 2>/dev/null)
rm -f "$m" "$m.last" "$m.sh"
case $kind in
"systemd --user")
  XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$u}; export XDG_RUNTIME_DIR
  systemctl --user stop "qgadash-thaw-$t.timer" "qgadash-thaw-$t.service" >/dev/null 2>&1 ;;
systemd*) systemctl stop "qgadash-thaw-$t.timer" "qgadash-thaw-$t.service" >/dev/null 2>&1 ;;
esac
pid=$(cat "$m.pid" 2>/dev/null)
case $pid in
"" | *[!0-9]*) ;;
*) if grep -q "$t" "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" 2>/dev/null; fi ;;
esac
rm -f "$m.pid"  # a killed keeper's own (its exit trap never ran)
echo disarmed
"""

# $1 token.
_PENDING = r"""
t=$1
case $t in *[!0-9a-f]* | "") echo "error bad token"; exit 0 ;; esac
if [ -e "$d/$t" ]; then echo "pending yes"; else echo "pending no"; fi
"""


@dataclass(frozen=True, slots=True)
class ThawRoute:
    """How a keeper on the hypervisor reaches the agents of one link.

    `kind` is "socat" (socket paths and tcp addresses, via = "socket" or "exec"), "sudo"
    (the link's wrapper, `via = "sudo"`) or "virsh" (libvirt domains); `tool` is the sudo
    wrapper path or the libvirt URI.
    """

    kind: str
    tool: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("socat", "sudo", "virsh"):
            raise ValueError(f"no thaw route {self.kind!r}")

    def arguments(self, address: str) -> list[str]:
        """The keeper's route arguments for one agent: kind, two values, a Proxmox vmid.

        tcp addresses go through socat whatever the link's `via` (as its endpoints do).
        """
        if self.kind == "virsh":
            return ["virsh", self.tool, address, ""]
        tcp = parse_tcp_address(address)
        if tcp is not None:
            host, port = tcp
            if not _TCP_HOST.fullmatch(host):
                raise ValueError(f"{address!r}: unexpected character in the host")
            shown = f"[{host}]" if ":" in host else host
            return ["socat", f"TCP:{shown}:{port}", "", ""]
        vmid = vm_name_for_socket(address) if is_proxmox_socket(address) else ""
        if self.kind == "sudo":
            return ["sudo", self.tool, address, vmid]
        return ["socat", socat_unix_address(address), "", vmid]


class CompletedCommand(Protocol):
    """What the keeper reads of a finished command (asyncssh's SSHCompletedProcess)."""

    @property
    def stdout(self) -> object: ...

    @property
    def stderr(self) -> object: ...

    @property
    def exit_status(self) -> int | None: ...


class HypervisorShell(Protocol):
    """The hypervisor connection the keeper runs its commands on (an SshConnection);
    a protocol, so this module does not import the SSH transport that builds it."""

    @property
    def name(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def connected_count(self) -> int: ...

    async def run(self, command: str, timeout: float = ...) -> CompletedCommand: ...


class RemoteThawKeeper:
    """`ThawKeeper` on a hypervisor reached over SSH (see the module docstring).

    Every method is one exec on the hypervisor's shared connection (it takes one of the
    connection's MaxSessions slots for a few milliseconds) and raises `AgentError`
    (`AgentConnectionError`, `AgentTimeout`) naming the hypervisor when it cannot run.
    """

    def __init__(self, connection: HypervisorShell, route: ThawRoute) -> None:
        self.connection = connection
        self.route = route
        # (connection count, monotonic time, answer) of the last probe.
        self._probed: tuple[int, float, str | None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    async def probe(self, timeout: float) -> str | None:
        """None when a keeper can be armed here, else one line saying what is missing.

        Cached for PROBE_TTL seconds on the same SSH connection (a reconnect asks again);
        a hypervisor that cannot be asked is an answer too, and not cached.
        """
        now = asyncio.get_running_loop().time()
        cached = self._probed
        if (
            cached is not None
            and cached[0] == self.connection.connected_count
            and now - cached[1] < PROBE_TTL
        ):
            return cached[2]
        try:
            lines = await self._run(
                _PROBE, [self.route.kind, self.route.tool], timeout, "probing for a thaw keeper"
            )
        except AgentError as exc:
            return str(exc)
        problems = [line for line in lines if line != "ok"]
        answer = None
        if problems or "ok" not in lines:
            answer = f"{self._where}: no thaw keeper possible: " + "; ".join(
                _explain(line) for line in problems or ["no answer from the probe"]
            )
        self._probed = (self.connection.connected_count, now, answer)
        return answer

    async def arm(self, address: str, token: str, seconds: float, timeout: float) -> str:
        """Marker first, then the delayed thaw; the kind armed ("systemd" or "nohup")."""
        _check_token(token)
        try:
            route = self.route.arguments(address)
        except ValueError as exc:
            raise AgentConnectionError(f"{self._where}: cannot arm a thaw: {exc}") from None
        delay = max(1, math.ceil(seconds))
        try:
            lines = await self._run(
                _ARM, [_KEEPER, token, str(delay), *route], timeout, "arming a thaw keeper"
            )
        except BaseException:
            # No answer (timeout, link cut, cancelled) does not mean the script did not
            # run: a keeper the caller thinks unarmed must not thaw later.
            self._disarm_soon(token)
            raise
        for line in lines:
            word, _, rest = line.partition(" ")
            if word == "armed" and rest in ("systemd", "nohup"):
                return rest
        raise AgentConnectionError(
            f"{self._where}: could not arm a thaw for {address}: {_failure(lines)}"
        )

    async def disarm(self, token: str, timeout: float) -> None:
        """Remove the marker, stop the timer or the sleeping keeper; idempotent."""
        _check_token(token)
        lines = await self._run(_DISARM, [token], timeout, "disarming a thaw keeper")
        if "disarmed" not in lines:
            raise AgentConnectionError(
                f"{self._where}: could not disarm the thaw {token}: {_failure(lines)}"
            )

    async def pending(self, token: str, timeout: float) -> bool:
        """Whether the marker is still there: armed, or fired and still trying."""
        _check_token(token)
        lines = await self._run(_PENDING, [token], timeout, "asking a thaw keeper")
        if "pending yes" in lines:
            return True
        if "pending no" in lines:
            return False
        raise AgentConnectionError(
            f"{self._where}: could not ask about the thaw {token}: {_failure(lines)}"
        )

    def _disarm_soon(self, token: str) -> None:
        async def disarm() -> None:
            with contextlib.suppress(AgentError):
                await self.disarm(token, DISARM_AFTER_FAILURE_TIMEOUT)

        task = asyncio.get_running_loop().create_task(disarm())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    @property
    def _where(self) -> str:
        return f"{self.connection.name} ({self.connection.host})"

    async def _run(self, script: str, args: list[str], timeout: float, what: str) -> list[str]:
        """Run `_DIRECTORY + script` with `args`; its output lines (raises AgentError)."""
        command = sh_command(_DIRECTORY + script) + " qgadash " + shlex.join(args)
        try:
            result = await self.connection.run(command, timeout)
        except AgentTimeout as exc:
            raise AgentTimeout(f"{exc} ({what})") from None
        except AgentConnectionError as exc:
            raise AgentConnectionError(f"{exc} ({what})") from None
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        lines = [line.strip() for line in stdout.decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            stderr = result.stderr if isinstance(result.stderr, bytes) else b""
            detail = stderr.decode("utf-8", "replace").strip().splitlines()
            raise AgentConnectionError(
                f"{self._where}: {what} failed (exit status {result.exit_status}"
                + (f": {detail[-1]}" if detail else "")
                + ")"
            )
        return lines


def _check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"a hold token is 16 lowercase hex digits, not {token!r}")


def _explain(line: str) -> str:
    word, _, rest = line.partition(" ")
    return f"{rest} is not installed" if word == "missing" else rest or line


def _failure(lines: list[str]) -> str:
    for line in lines:
        word, _, rest = line.partition(" ")
        if word in ("unusable", "error"):
            return rest
    return "; ".join(lines)[:300]
