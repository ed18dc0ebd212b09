"""guest-file-*: handles over the guest's files, as qemu-ga 7.2 opens, reads, writes
and seeks them (Linux and Windows wording)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from qgadash.sim.commands.schema import CommandError, b64decode
from qgadash.sim.commands.state import AgentState, Handle, norm_path, split_path

_FILE_READ_MAX = 48 << 20
_FILE_READ_DEFAULT = 4096
_OPEN_MODES = {
    # mode: (readable, writable, create, truncate, append)
    "r": (True, False, False, False, False),
    "rb": (True, False, False, False, False),
    "w": (False, True, True, True, False),
    "wb": (False, True, True, True, False),
    "a": (False, True, True, False, True),
    "ab": (False, True, True, False, True),
    "r+": (True, True, False, False, False),
    "rb+": (True, True, False, False, False),
    "r+b": (True, True, False, False, False),
    "w+": (True, True, True, True, False),
    "wb+": (True, True, True, True, False),
    "w+b": (True, True, True, True, False),
    "a+": (True, True, True, False, True),
    "ab+": (True, True, True, False, True),
    "a+b": (True, True, True, False, True),
}
_WIN_ERRORS = {
    "No such file or directory": "The system cannot find the file specified.",
    "Is a directory": "Access is denied.",
}


class FileCommands(AgentState):
    """Open handles and their reads, writes and seeks."""

    __slots__ = ()

    def _handle_for(self, args: dict[str, object]) -> Handle:
        number = args["handle"]
        assert isinstance(number, int)
        handle = self._handles.get(number) if self._handles is not None else None
        if handle is None:
            raise CommandError(f"handle '{number}' has not been found")
        return handle

    def _cmd_file_open(self, args: dict[str, object]) -> object:
        path = args["path"]
        mode = args.get("mode", "r")
        assert isinstance(path, str) and isinstance(mode, str)
        flags = _OPEN_MODES.get(mode)
        if flags is None:
            raise CommandError(f"invalid file open mode '{mode}'")
        readable, writable, create, truncate, append = flags
        windows = self._profile.windows
        key = norm_path(path, windows)
        found = self._lookup(key)

        def fail(reason: str) -> CommandError:
            if windows:
                return CommandError(f"failed to open file '{path}': {_WIN_ERRORS[reason]}")
            return CommandError(f"failed to open file '{path}' (mode: '{mode}'): {reason}")

        if found is False:
            parent, _ = split_path(key, windows)
            parent_found = self._lookup(parent)
            if not create or parent_found is not None:
                raise fail("No such file or directory")
        if found is None and writable:
            raise fail("Is a directory")
        if writable and (truncate or found is False):
            data = self._write_target(key, path)
            if truncate:
                del data[:]
            self._touch(key)
        if self._handles is None:
            self._handles = {}
        number = self._next_handle
        self._next_handle += 1
        self._handles[number] = Handle(key, path, readable, writable, append, found is None)
        return number

    def _cmd_file_close(self, args: dict[str, object]) -> object:
        self._handle_for(args)
        assert self._handles is not None
        number = args["handle"]
        assert isinstance(number, int)
        del self._handles[number]
        return {}

    def _cmd_file_flush(self, args: dict[str, object]) -> object:
        self._handle_for(args)
        return {}

    def _cmd_file_read(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        count = args.get("count", _FILE_READ_DEFAULT)
        assert isinstance(count, int)
        if count < 0 or count > _FILE_READ_MAX:
            raise CommandError(f"value '{count}' is invalid for argument count")
        if handle.is_dir:
            raise CommandError("failed to read file: Is a directory")
        if not handle.readable:
            raise CommandError("failed to read file: Bad file descriptor")
        found = self._lookup(handle.path)
        content = found if isinstance(found, bytes) else b""
        chunk = content[handle.pos : handle.pos + count]
        handle.pos += len(chunk)
        if count > 0 and len(chunk) < count:
            handle.eof = True
        return {
            "count": len(chunk),
            "buf-b64": base64.b64encode(chunk).decode("ascii"),
            "eof": handle.eof,
        }

    def _cmd_file_write(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        encoded = args["buf-b64"]
        assert isinstance(encoded, str)
        data = b64decode(encoded)
        count = args.get("count", len(data))
        assert isinstance(count, int)
        if count < 0 or count > len(data):
            raise CommandError(f"value '{count}' is invalid for argument count")
        if not handle.writable or handle.is_dir:
            raise CommandError("failed to write to file: Bad file descriptor")
        target = self._write_target(handle.path, handle.shown)
        if handle.append:
            handle.pos = len(target)
        if handle.pos > len(target):
            target.extend(b"\x00" * (handle.pos - len(target)))
        target[handle.pos : handle.pos + count] = data[:count]
        handle.pos += count
        self._touch(handle.path)
        return {"count": count, "eof": False}

    def _cmd_file_seek(self, args: dict[str, object]) -> object:
        handle = self._handle_for(args)
        offset = args["offset"]
        whence = args["whence"]
        assert isinstance(offset, int)
        origins: dict[object, int] = {0: 0, 1: handle.pos, 2: self._size_of(handle.path)}
        origins.update({"set": origins[0], "cur": origins[1], "end": origins[2]})
        base = origins.get(whence)
        if base is None:
            raise CommandError(f"invalid whence code {whence}")
        position = base + offset
        if position < 0:
            raise CommandError("failed to seek file: Invalid argument")
        handle.pos = position
        handle.eof = False
        return {"eof": False, "position": position}


HANDLERS: dict[str, Callable[[FileCommands, dict[str, object]], object]] = {
    "guest-file-open": FileCommands._cmd_file_open,
    "guest-file-close": FileCommands._cmd_file_close,
    "guest-file-flush": FileCommands._cmd_file_flush,
    "guest-file-read": FileCommands._cmd_file_read,
    "guest-file-write": FileCommands._cmd_file_write,
    "guest-file-seek": FileCommands._cmd_file_seek,
}
