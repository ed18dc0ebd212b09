"""A fleet of simulated agents, each on its own unix socket, in the running event loop.

Each VM gets a plain non-blocking listening socket watched with `loop.add_reader` (no
`asyncio.Server` per VM: cheaper at 10,000 VMs). Like a real qemu-ga socket, a VM serves
one client at a time: while a client is connected the listening socket is not watched,
so later clients wait in the kernel's accept queue (their connect succeeds, nothing is
answered) and a full queue refuses further connects with EAGAIN. Replies produced after
a client left are delivered to the next client, as QEMU's chardev does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from qgadash.sim.agent import Close, GuestAgent, Output, Pause, PowerOff, Stream
from qgadash.sim.profiles import Era, Fault, GuestProfile, demo_fleet, era_profile, make_profile

__all__ = ["SimFleet", "SimVm", "assign_eras", "assign_faults", "raise_open_file_limit"]

_UNIX_PATH_MAX = 107
_BACKLOG_CAP = 64 << 20  # replies kept for the next client, at most


@dataclass(frozen=True, slots=True)
class SimVm:
    """One simulated VM: its socket is `<directory>/<name>.sock`."""

    name: str
    profile: GuestProfile
    fault: Fault = Fault.NONE


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def assign_eras(count: int, eras: Mapping[Era, int] | None) -> list[Era | None]:
    """An agent era for each of `count` VMs (None: the varied default of `make_profile`),
    the requested numbers spread evenly and deterministically, as faults are."""
    result: list[Era | None] = [None] * count
    wanted: list[Era] = []
    for era in Era:
        number = (eras or {}).get(era, 0)
        if number < 0:
            raise ValueError(f"era {era}: count must not be negative, got {number}")
        wanted.extend([era] * number)
    if len(wanted) > count:
        raise ValueError(f"{len(wanted)} VMs of given eras asked for; the fleet has only {count}")
    for j, era in enumerate(wanted):
        # Offset by a quarter step from the faults' positions: eras and faults mix.
        result[int((j + 0.25) * count / len(wanted))] = era
    return result


def assign_faults(count: int, faults: Mapping[Fault, int] | None) -> list[Fault]:
    """A fault for each of `count` VMs: the requested numbers, spread evenly, deterministic."""
    result = [Fault.NONE] * count
    if not faults:
        return result
    wanted: list[Fault] = []
    for fault in Fault:  # enum order, so the assignment does not depend on dict order
        number = faults.get(fault, 0)
        if number < 0:
            raise ValueError(f"fault {fault}: count must not be negative, got {number}")
        if fault is not Fault.NONE:
            wanted.extend([fault] * number)
    if len(wanted) > count:
        raise ValueError(f"{len(wanted)} faulty VMs requested but the fleet has only {count}")
    for j, fault in enumerate(wanted):
        result[int((j + 0.5) * count / len(wanted))] = fault
    return result


class _Client(asyncio.Protocol):
    __slots__ = ("_server",)

    def __init__(self, server: _VmServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._server.attach(transport)

    def data_received(self, data: bytes) -> None:
        self._server.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.detach()

    def pause_writing(self) -> None:
        self._server.paused = True

    def resume_writing(self) -> None:
        self._server.resume()


class _VmServer:
    """One VM: a listening socket, the agent, and the one client being served."""

    __slots__ = (
        "_backlog",
        "_loop",
        "_queue",
        "_runner",
        "_sock",
        "_transport",
        "_waiter",
        "agent",
        "backlog_size",
        "path",
        "paused",
        "vm",
    )

    def __init__(
        self,
        vm: SimVm,
        path: Path,
        agent: GuestAgent,
        backlog_size: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.vm = vm
        self.path = path
        self.agent = agent
        self.backlog_size = backlog_size
        self.paused = False
        self._loop = loop
        self._sock: socket.socket | None = None
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Output] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._backlog = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    # -- listening ---------------------------------------------------------------------

    def listen(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            sock.bind(str(self.path))
            sock.listen(self.backlog_size)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_acceptable)

    def _on_acceptable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. EMFILE: leave it in the queue, try again on the next event
        self._loop.remove_reader(sock.fileno())  # one client at a time
        self._loop.create_task(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: _Client(self), conn)
        except OSError:
            conn.close()
            self._resume_accepting()

    def _resume_accepting(self) -> None:
        if self._sock is not None and self._transport is None:
            self._loop.add_reader(self._sock.fileno(), self._on_acceptable)

    def close(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None
        self._queue.clear()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    # -- the client ------------------------------------------------------------------

    def attach(self, transport: asyncio.Transport) -> None:
        if self._sock is None:  # closed or powered off while the connection was set up
            transport.abort()
            return
        self._transport = transport
        self.paused = False
        if self._backlog:
            transport.write(bytes(self._backlog))
            self._backlog.clear()
        outputs = self.agent.connect()
        if outputs:
            self._submit(outputs)

    def detach(self) -> None:
        self._transport = None
        self.resume()
        self._resume_accepting()

    def resume(self) -> None:
        self.paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_data(self, data: bytes) -> None:
        outputs = self.agent.receive(data)
        if outputs:
            self._submit(outputs)

    def _submit(self, outputs: list[Output]) -> None:
        if self._runner is None and all(isinstance(o, bytes) for o in outputs):
            for item in outputs:
                assert isinstance(item, bytes)
                self._write(item)
            return
        self._queue.extend(outputs)
        if self._runner is None:
            self._runner = self._loop.create_task(self._run_queue())

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
        elif len(self._backlog) + len(data) <= _BACKLOG_CAP:
            self._backlog += data  # the next client reads it, as with a real chardev

    async def _drain(self) -> None:
        while self.paused and self._transport is not None:
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None

    async def _run_queue(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, bytes):
                    self._write(item)
                    await self._drain()
                elif isinstance(item, Pause):
                    await asyncio.sleep(item.seconds)
                elif isinstance(item, Stream):
                    await self._stream(item.chunks)
                elif isinstance(item, Close):
                    if self._transport is not None:
                        self._transport.close()
                elif isinstance(item, PowerOff):
                    self.close()
                    return
        finally:
            self._runner = None

    async def _stream(self, chunks: Iterable[bytes]) -> None:
        transport = self._transport
        if transport is None:
            return
        for chunk in chunks:
            if self._transport is not transport or transport.is_closing():
                return  # the client left: a real agent's write would fail too
            transport.write(chunk)
            await self._drain()
            if not self.paused:
                await asyncio.sleep(0)


class SimFleet:
    """Simulated agents on unix sockets under `directory`, served by this event loop.

    >>> async with SimFleet.healthy(Path("/tmp/sim"), 100) as fleet:
    ...     fleet.write_hosts_toml(Path("/tmp/sim/hosts.toml"))
    """

    def __init__(
        self,
        directory: Path,
        vms: Sequence[SimVm],
        *,
        backlog: int = 1,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.vms = list(vms)
        self.backlog = backlog
        self._clock = clock
        self._wall = wall
        self._servers: dict[str, _VmServer] = {}
        names = [vm.name for vm in self.vms]
        if len(set(names)) != len(names):
            raise ValueError("VM names must be unique within a fleet")
        for name in names:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"VM name {name!r} cannot be a socket file name")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def healthy(
        cls,
        directory: Path,
        count: int,
        seed: int = 0,
        faults: Mapping[Fault, int] | None = None,
        *,
        backlog: int = 1,
        eras: Mapping[Era, int] | None = None,
    ) -> SimFleet:
        """`count` varied guests named vm-00000, vm-00001, ...; `faults` gives some of them
        a fault each (`{Fault.SILENT: 3}`), `eras` an agent of that era (`{Era.QGA_1_2:
        2}`), spread evenly and deterministically."""
        vms = fleet_slice(count, seed, faults, range(count), eras)
        return cls(directory, vms, backlog=backlog)

    @classmethod
    def demo(cls, directory: Path, count: int = 24, seed: int = 0) -> SimFleet:
        """The `qgadash --demo` fleet."""
        return cls(directory, [SimVm(n, p, f) for n, p, f in demo_fleet(count, seed)])

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every socket; when this returns, every socket accepts connections."""
        loop = asyncio.get_running_loop()
        self.directory.mkdir(parents=True, exist_ok=True)
        limit = raise_open_file_limit()
        needed = len(self.vms) + 64
        if needed > limit:
            raise OSError(
                f"{len(self.vms)} simulated VMs need about {needed} open files but this "
                f"process may open {limit}: split the fleet across processes (--procs)"
            )
        kwargs: dict[str, Callable[[], float]] = {}
        if self._clock is not None:
            kwargs["clock"] = self._clock
        if self._wall is not None:
            kwargs["wall"] = self._wall
        try:
            for vm in self.vms:
                path = self.socket_path(vm.name)
                if len(os.fsencode(path)) > _UNIX_PATH_MAX:
                    raise OSError(f"socket path too long for a unix socket: {path}")
                agent = GuestAgent(vm.profile, vm.fault, **kwargs)
                server = _VmServer(vm, path, agent, self.backlog, loop)
                server.listen()
                self._servers[vm.name] = server
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every client and socket and remove the socket files."""
        servers = list(self._servers.values())
        self._servers.clear()
        for server in servers:
            server.close()
        await asyncio.sleep(0)

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- inspection and control ---------------------------------------------------------

    def socket_path(self, name: str) -> Path:
        return self.directory / f"{name}.sock"

    def agent(self, name: str) -> GuestAgent:
        """The agent behind a VM (to inspect or change its state in tests)."""
        return self._servers[name].agent

    def is_listening(self, name: str) -> bool:
        server = self._servers.get(name)
        return server is not None and server.listening

    def power_on(self, name: str) -> None:
        """Start a VM again after guest-shutdown took it away."""
        server = self._servers[name]
        server.agent.power_on()
        if not server.listening:
            server.listen()

    def write_hosts_toml(
        self,
        path: Path,
        hypervisor: str = "sim",
        *,
        poll_interval: float = 5.0,
        timeout: float = 3.0,
        session: str = "held",
    ) -> Path:
        """A hosts.toml (see contracts.md) pointing at this fleet's sockets."""
        return write_hosts_toml(
            path,
            self.directory,
            hypervisor,
            poll_interval=poll_interval,
            timeout=timeout,
            session=session,
            count=len(self.vms),
        )


def write_hosts_toml(
    path: Path,
    directory: Path,
    hypervisor: str = "sim",
    *,
    poll_interval: float = 5.0,
    timeout: float = 3.0,
    session: str = "held",
    count: int | None = None,
) -> Path:
    """Write a hosts.toml whose one hypervisor globs `<directory>/*.sock`."""
    pattern = str(Path(directory).resolve() / "*.sock")
    what = f"{count} simulated VMs" if count is not None else "simulated VMs"
    text = (
        f"# Written by qgadash.sim: {what} (python -m qgadash.sim)\n"
        "[settings]\n"
        f"poll_interval = {float(poll_interval)!r}\n"
        f"timeout = {float(timeout)!r}\n"
        "\n"
        "[[hypervisor]]\n"
        f"name = {json.dumps(hypervisor)}\n"
        f"agents = [{json.dumps(pattern)}]\n"
        f"session = {json.dumps(session)}\n"
        'tags = ["sim"]\n'
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def fleet_slice(
    count: int,
    seed: int,
    faults: Mapping[Fault, int] | None,
    indices: range,
    eras: Mapping[Era, int] | None = None,
) -> list[SimVm]:
    """The VMs at `indices` of the fleet `SimFleet.healthy(count, seed, faults, eras)`
    makes, so several processes can each serve a slice of one deterministic fleet."""
    assigned = assign_faults(count, faults)
    agents = assign_eras(count, eras)
    width = max(5, len(str(max(count - 1, 0))))
    vms = []
    for i in indices:
        era = agents[i]
        profile = make_profile(i, seed) if era is None else era_profile(era, i, seed)
        vms.append(SimVm(f"vm-{i:0{width}d}", profile, assigned[i]))
    return vms
