"""guest-exec and guest-exec-status, with a small shell: the programs qgadash runs
(its listing script, cat, ls, uname, ...) and Windows PowerShell 5.1's command line."""

from __future__ import annotations

import base64
import shlex
import time
from collections.abc import Callable

from qgadash.sim import powershell
from qgadash.sim.commands.schema import CommandError, b64decode
from qgadash.sim.commands.state import S_IFREG, AgentState, Process, norm_path

_EXEC_OUTPUT_MAX = 16 << 20
_PROGRAMS = frozenset(
    {"echo", "true", "false", "hostname", "uname", "sleep", "cat", "ls", "id", "uptime", "date"}
)


class ExecCommands(AgentState):
    """Processes that finish after their simulated duration."""

    __slots__ = ()

    def _cmd_exec(self, args: dict[str, object]) -> object:
        path = args["path"]
        argv = args.get("arg", [])
        capture = args.get("capture-output", False)
        assert isinstance(path, str) and isinstance(argv, list)
        words = [str(a) for a in argv]
        stdin = b""
        if isinstance(args.get("input-data"), str):
            stdin = b64decode(str(args["input-data"]))
        result = self._simulate(path, words, stdin)
        if result is None:
            raise CommandError(
                "Guest agent command failed, error was 'Failed to execute child process "
                f"\u201c{path}\u201d (No such file or directory)'"
            )
        exitcode, out, err, duration = result
        if capture == "merged":
            out, err = out + err, b""
        elif capture in ("none", False):
            out = err = b""
        elif capture == "stdout":
            err = b""
        elif capture == "stderr":
            out = b""
        if self._exec is None:
            self._exec = {}
        pid = self._next_pid
        self._next_pid += 1
        self._exec[pid] = Process(self._clock() + duration, exitcode, None, out, err, bool(capture))
        return {"pid": pid}

    def _cmd_exec_status(self, args: dict[str, object]) -> object:
        pid = args["pid"]
        assert isinstance(pid, int)
        process = self._exec.get(pid) if self._exec is not None else None
        if process is None:
            raise CommandError("Invalid parameter 'pid'")
        if self._clock() < process.done_at:
            return {"exited": False}
        assert self._exec is not None
        del self._exec[pid]
        status: dict[str, object] = {}
        if process.exitcode is not None:
            status["exitcode"] = process.exitcode
        if process.signal is not None:
            status["signal"] = process.signal
        if process.out:
            status["out-data"] = base64.b64encode(process.out[:_EXEC_OUTPUT_MAX]).decode()
            status["out-truncated"] = len(process.out) > _EXEC_OUTPUT_MAX
        if process.err:
            status["err-data"] = base64.b64encode(process.err[:_EXEC_OUTPUT_MAX]).decode()
            status["err-truncated"] = len(process.err) > _EXEC_OUTPUT_MAX
        status["exited"] = True
        return status

    def _simulate(
        self, path: str, argv: list[str], stdin: bytes
    ) -> tuple[int, bytes, bytes, float] | None:
        """(exit code, stdout, stderr, seconds it runs), or None if `path` cannot run."""
        program = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
        if program.endswith(".exe"):
            program = program[:-4]
        if program in ("sh", "bash", "dash", "ash"):
            if len(argv) >= 4 and argv[0] == "-c" and argv[2] == "qgadash-ls":
                # qgadash's listing script: lines, or NUL-ended records if it printf's them
                return self._list_command(argv[3], nul="\\000" in argv[1])
            if argv and argv[0] == "-c" and len(argv) >= 2:
                return self._shell(argv[1], stdin)
            return 0, b"", b"", 0.02
        if program == "powershell" and self._profile.windows:
            return self._powershell(argv, stdin)
        if program in _PROGRAMS or program in ("cmd", "powershell"):
            return self._program(program, argv, stdin)
        found = self._lookup(norm_path(path, self._profile.windows))
        if isinstance(found, bytes) and found:
            return 0, b"", b"", 0.02
        return None

    def _list_command(self, directory: str, nul: bool = False) -> tuple[int, bytes, bytes, float]:
        windows = self._profile.windows
        found = self._lookup(norm_path(directory, windows))
        if found is False:
            return 1, b"", f"qgadash-ls: {directory}: No such file or directory\n".encode(), 0.02
        if found is not None:
            return 1, b"", f"qgadash-ls: {directory}: Not a directory\n".encode(), 0.02
        end = "\0" if nul else "\n"
        lines = [
            f"{mode:x} {size} {mtime} {name}{end}"
            for mode, size, mtime, name in self._listing(directory)
        ]
        return 0, "".join(lines).encode("utf-8", "replace"), b"", 0.03

    def _powershell(self, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes, float]:
        """powershell.exe as Windows PowerShell 5.1 reads its command line (see
        qgadash.sim.powershell): what follows -Command is script text, not $args."""
        invocation = powershell.parse_command_line(argv, stdin)

        def listing(path: str) -> list[tuple[int, int, int, str]] | bool | None:
            found = self._lookup(norm_path(path, True))
            if found is False:
                return False
            if found is not None:  # a file lists as itself
                name = path.replace("/", "\\").rstrip("\\").rsplit("\\", 1)[-1]
                return [(S_IFREG | 0o644, len(found) if isinstance(found, bytes) else 0, 0, name)]
            return self._listing(path)

        def create(path: str) -> None:
            self._write_target(norm_path(path, True), path)
            self._touch(norm_path(path, True))

        code, out, err = powershell.run(invocation, powershell.Guest(listing, create))
        return code, out, err, 0.3

    def _shell(self, script: str, stdin: bytes) -> tuple[int, bytes, bytes, float]:
        try:
            words = shlex.split(script)
        except ValueError:
            return 2, b"", b"sh: 1: Syntax error: Unterminated quoted string\n", 0.01
        if not words:
            return 0, b"", b"", 0.01
        program = words[0].rsplit("/", 1)[-1]
        if program == "exit":
            code = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            return code, b"", b"", 0.01
        if program in _PROGRAMS:
            return self._program(program, words[1:], stdin)
        return 127, b"", f"sh: 1: {words[0]}: not found\n".encode(), 0.01

    def _program(
        self, program: str, argv: list[str], stdin: bytes
    ) -> tuple[int, bytes, bytes, float]:
        p = self._profile
        if program == "echo":
            return 0, (" ".join(argv) + "\n").encode(), b"", 0.01
        if program == "true":
            return 0, b"", b"", 0.01
        if program == "false":
            return 1, b"", b"", 0.01
        if program == "hostname":
            return 0, (p.hostname + "\n").encode(), b"", 0.01
        if program == "uname":
            if "-a" in argv:
                text = (
                    f"Linux {p.hostname} {p.os.kernel_release} {p.os.kernel_version} "
                    f"{p.os.machine} GNU/Linux\n"
                )
            elif "-r" in argv:
                text = p.os.kernel_release + "\n"
            else:
                text = "Linux\n"
            return 0, text.encode(), b"", 0.01
        if program == "sleep":
            try:
                seconds = float(argv[0]) if argv else 0.0
            except ValueError:
                return 1, b"", f"sleep: invalid time interval '{argv[0]}'\n".encode(), 0.01
            return 0, b"", b"", max(0.0, min(seconds, 3600.0))
        if program == "cat":
            if not argv:
                return 0, stdin, b"", 0.01
            out = bytearray()
            for name in argv:
                found = self._lookup(norm_path(name, p.windows))
                if found is False:
                    return 1, bytes(out), f"cat: {name}: No such file or directory\n".encode(), 0.01
                if found is None:
                    return 1, bytes(out), f"cat: {name}: Is a directory\n".encode(), 0.01
                assert isinstance(found, bytes)
                out += found
            return 0, bytes(out), b"", 0.01
        if program == "ls":
            directory = next((a for a in argv if not a.startswith("-")), "/")
            found = self._lookup(norm_path(directory, p.windows))
            if found is False:
                message = f"ls: cannot access '{directory}': No such file or directory\n"
                return 2, b"", message.encode(), 0.01
            names = "".join(
                row[3] + "\n"
                for row in self._listing(directory)
                if not row[3].startswith(".") or "-a" in argv
            )
            return 0, names.encode("utf-8", "replace"), b"", 0.01
        if program == "id":
            return 0, b"uid=0(root) gid=0(root) groups=0(root)\n", b"", 0.01
        if program == "uptime":
            up = int(self._elapsed()) + 86400
            l1, l5, l15 = self._loads()
            text = (
                f" up {up // 86400} day, {up % 86400 // 3600}:{up % 3600 // 60:02d},  "
                f"1 user,  load average: {l1:.2f}, {l5:.2f}, {l15:.2f}\n"
            )
            return 0, text.encode(), b"", 0.01
        if program == "date":
            stamp = time.strftime(
                "%a %b %d %H:%M:%S UTC %Y", time.gmtime(self._guest_time_ns() / 1e9)
            )
            return 0, (stamp + "\n").encode(), b"", 0.01
        if program in ("cmd", "powershell"):
            text = " ".join(argv[1:]) if argv else ""
            return 0, (text + "\r\n").encode(), b"", 0.05
        return 127, b"", f"{program}: not found\n".encode(), 0.01


HANDLERS: dict[str, Callable[[ExecCommands, dict[str, object]], object]] = {
    "guest-exec": ExecCommands._cmd_exec,
    "guest-exec-status": ExecCommands._cmd_exec_status,
}
