"""`cp`: files between the operator's disk and a guest, never replacing a local file
without consent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path, PurePosixPath

from qgadash.agent.errors import AgentError
from qgadash.cli.progress import transfer_bar
from qgadash.cli.select import EXIT_FAILED, EXIT_OK, UsageError, ask_yes, confirm
from qgadash.fleet.actions import ReadOnlyError
from qgadash.fleet.engine import FleetEngine
from qgadash.fleet.sanitize import printable


def _split_remote(spec: str, ids: set[str]) -> tuple[str, str] | None:
    head, sep, tail = spec.partition(":")
    if sep and head in ids:
        return head, tail
    return None


async def cmd_cp(engine: FleetEngine, args: argparse.Namespace) -> int:
    await engine.discover()
    ids = set(engine.store.ids())
    src = _split_remote(args.source, ids)
    dst = _split_remote(args.destination, ids)
    if (src is None) == (dst is None):
        raise UsageError("cp needs exactly one side as VM:PATH (VM is an id such as hv1/web-1)")
    if src is not None:
        return await _download(engine, args, *src)
    assert dst is not None
    if engine.settings.read_only:
        raise ReadOnlyError("read-only mode: writing to a guest is not allowed")
    vm_id, path = dst
    local = Path(args.source)
    if not local.is_file():
        raise UsageError(f"{local}: not a file")
    if not await confirm(f"Write {local} ({local.stat().st_size} bytes) to {vm_id}:{path}?", args):
        return EXIT_FAILED
    try:
        with transfer_bar(f"upload {local.name}") as progress:
            size = await engine.files.upload(vm_id, local, path, progress=progress)
    except (AgentError, OSError) as exc:
        return _cp_failed(vm_id, path, exc)
    print(f"copied {size} bytes from {local} to {vm_id}:{printable(path)}", file=sys.stderr)
    return EXIT_OK


async def _download(engine: FleetEngine, args: argparse.Namespace, vm_id: str, path: str) -> int:
    """cp VM:PATH LOCAL: an existing LOCAL is replaced only with --force or a "y" on a
    terminal; a directory gets the file under the name the operator typed; `-` is stdout."""
    if args.destination == "-":
        try:
            with transfer_bar(f"download {printable(path, 60)}") as progress:
                size = await engine.files.download_to(
                    vm_id, path, sys.stdout.buffer.write, progress=progress
                )
        except (AgentError, OSError) as exc:
            return _cp_failed(vm_id, path, exc)
        sys.stdout.buffer.flush()
        return EXIT_OK
    local = Path(args.destination)
    if local.is_dir():
        name = PurePosixPath(path.replace("\\", "/")).name
        if name in ("", ".", ".."):
            raise UsageError(f"{printable(path)}: no file name to save under; name the file")
        local = local / name
    overwrite = bool(args.force)
    if os.path.lexists(local) and not overwrite:
        if not sys.stdin.isatty():
            print(f"qgadash: {local} exists; not replaced (add --force)", file=sys.stderr)
            return EXIT_FAILED
        # Not `confirm`: --yes answers "run the copy", not "replace my file".
        if not await ask_yes(f"{local} exists. Replace it?"):
            print(f"qgadash: {local} not replaced; nothing was copied", file=sys.stderr)
            return EXIT_FAILED
        overwrite = True
    try:
        with transfer_bar(f"download {printable(path, 60)}") as progress:
            size = await engine.files.download(
                vm_id, path, local, overwrite=overwrite, progress=progress
            )
    except (AgentError, OSError) as exc:
        return _cp_failed(vm_id, path, exc)
    print(f"copied {size} bytes from {vm_id}:{printable(path)} to {local}", file=sys.stderr)
    return EXIT_OK


def _cp_failed(vm_id: str, path: str, exc: Exception) -> int:
    """A failed copy: one line naming the guest file, no traceback."""
    print(f"qgadash: {vm_id}:{printable(path)}: {printable(str(exc), 300)}", file=sys.stderr)
    return EXIT_FAILED
