"""The fleet table as data: columns, filter, sort keys, cell values. No Textual here.

A row is described per column by a small hashable *cell value* computed from a snapshot
(`row_values`); the table compares it with what it last drew and rebuilds only the
cells whose value changed (`render_cell`). Values that depend on the clock (the thaw
countdown) are whole seconds, so they change at most once a second; "last seen" moves at
a coarse step (`seen_step`).
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rich.style import Style
from rich.text import Text

from qgadash.fleet.guard import Hold
from qgadash.fleet.model import (
    AgentState,
    FreezeState,
    HypervisorState,
    HypervisorStatus,
    VmSnapshot,
)
from qgadash.fleet.store import FleetTally
from qgadash.ui.formatting import format_age, format_countdown, format_latency, format_rate
from qgadash.ui.plain import plain

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "Column",
    "FleetCounts",
    "FleetFilter",
    "HoldSummary",
    "Palette",
    "Tone",
    "count_fleet",
    "counts_from_tally",
    "hold_summary",
    "is_fault",
    "render_cell",
    "row_values",
    "sort_ids",
]

CellValue = tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Palette:
    """Rich styles for states, taken from the theme's variables."""

    ok: Style = field(default_factory=lambda: Style(color="green"))
    warning: Style = field(default_factory=lambda: Style(color="yellow"))
    error: Style = field(default_factory=lambda: Style(color="red"))
    frozen: Style = field(default_factory=lambda: Style(color="cyan"))
    stale: Style = field(default_factory=lambda: Style(color="bright_black"))
    accent: Style = field(default_factory=lambda: Style(color="magenta"))
    mark: Style = field(default_factory=lambda: Style(color="magenta", bold=True))


# -- faults and counts ----------------------------------------------------------------

_FAULT_STATES = frozenset({AgentState.TIMEOUT, AgentState.UNREACHABLE, AgentState.ERROR})
HYPERVISOR_DOWN = frozenset(
    {HypervisorState.UNREACHABLE, HypervisorState.AUTH_FAILED, HypervisorState.HOST_KEY_REJECTED}
)
HYPERVISOR_UP = frozenset({HypervisorState.LOCAL, HypervisorState.CONNECTED})


def is_fault(snap: VmSnapshot) -> bool:
    """What the faults-only view keeps: agents not answering, failed thaws."""
    return snap.agent in _FAULT_STATES or snap.thaw_error is not None


@dataclass(frozen=True, slots=True)
class FleetCounts:
    total: int
    by_state: dict[AgentState, int]
    frozen: int  # frozen and not held by this session (someone else froze them)
    thaw_errors: int
    hypervisors: tuple[HypervisorStatus, ...]

    @property
    def hypervisors_up(self) -> int:
        return sum(1 for h in self.hypervisors if h.state in HYPERVISOR_UP)

    @property
    def hypervisors_down(self) -> tuple[HypervisorStatus, ...]:
        return tuple(h for h in self.hypervisors if h.state in HYPERVISOR_DOWN)

    @property
    def hypervisors_connecting(self) -> int:
        return sum(1 for h in self.hypervisors if h.state is HypervisorState.CONNECTING)


def count_fleet(
    snapshots: Iterable[VmSnapshot],
    hypervisors: Iterable[HypervisorStatus],
    held: Collection[str] = (),
) -> FleetCounts:
    """Counts for the header; `held`: the VMs this session froze (counted apart, with
    their deadline, by `hold_summary`)."""
    states: Counter[AgentState] = Counter()
    frozen = thaw_errors = total = 0
    for snap in snapshots:
        total += 1
        states[snap.agent] += 1
        if snap.freeze is FreezeState.FROZEN and snap.id not in held:
            frozen += 1
        if snap.thaw_error is not None:
            thaw_errors += 1
    hvs = tuple(sorted(hypervisors, key=lambda h: h.name))
    return FleetCounts(total, dict(states), frozen, thaw_errors, hvs)


def counts_from_tally(
    tally: FleetTally, hypervisors: Iterable[HypervisorStatus], held: Collection[str] = ()
) -> FleetCounts:
    """`count_fleet`'s answer from the store's running tally, without a pass over the
    fleet (the dashboard asks after every batch of changes)."""
    frozen = tally.frozen
    held_frozen = sum(1 for vm_id in held if vm_id in frozen)
    hvs = tuple(sorted(hypervisors, key=lambda h: h.name))
    return FleetCounts(
        tally.total, dict(tally.by_state), len(frozen) - held_frozen, tally.thaw_errors, hvs
    )


@dataclass(frozen=True, slots=True)
class HoldSummary:
    """What the header says about this session's freezes; whole seconds, so it changes
    at most once a second."""

    held: int = 0  # VMs this session froze and has not thawed, timed or not
    next_thaw: int | None = None  # seconds to the nearest deadline; None: no timed hold
    settling: bool = False  # the holds an earlier qgadash left are being settled


def hold_summary(holds: Sequence[Hold], now: float, *, settling: bool = False) -> HoldSummary:
    deadlines = [h.deadline for h in holds if h.deadline is not None]
    next_thaw = None
    if deadlines:
        next_thaw = int(max(0.0, min(deadlines) - now) + 0.999)
    return HoldSummary(len(holds), next_thaw, settling)


# -- filter ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Term:
    negate: bool
    field: str  # "" (what the row shows), "tag", "ip" (every address), "os" (every OS name)
    pattern: str
    glob: bool

    def hit(self, snap: VmSnapshot) -> bool:
        if self.field == "tag":
            tags = [t.lower() for t in snap.ref.tags]
            if self.glob:
                return any(fnmatch.fnmatchcase(t, self.pattern) for t in tags)
            return self.pattern in tags
        haystack = _FIELDS[self.field](snap)
        if self.glob:
            return any(fnmatch.fnmatchcase(f, self.pattern) for f in haystack)
        return any(self.pattern in f for f in haystack)


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """`/` filter: whitespace-separated terms, all of which must hold.

    A term is a substring, or a glob when it has `*?[`, matched case-insensitively
    against what the row shows: VM id, hypervisor, agent state, OS, hostname, IPv4. So
    what matched is always on screen, and `a` (mark shown) never marks a VM for a reason
    the operator cannot see. Hidden fields need their prefix: `ip:` any address of any
    interface, `os:` the OS id and full name, `tag:` a tag (NAME may be a glob). A
    leading `!` inverts the term.
    """

    text: str = ""
    terms: tuple[_Term, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FleetFilter:
        terms = []
        for raw in text.split():
            negate = raw.startswith("!")
            body = raw[1:] if negate else raw
            field = ""
            prefix, colon, rest = body.partition(":")
            if colon and prefix.lower() in ("tag", "ip", "os"):
                field, body = prefix.lower(), rest
            if not body:
                continue
            body = body.lower()
            terms.append(_Term(negate, field, body, any(c in body for c in "*?[")))
        return cls(text, tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, snap: VmSnapshot) -> bool:
        return all(term.hit(snap) != term.negate for term in self.terms)


def search_fields(snap: VmSnapshot) -> list[str]:
    """The lower-cased strings a plain filter term is matched against: the row's text."""
    facts = snap.facts
    fields = [snap.id.lower(), snap.ref.hypervisor.lower(), agent_label(snap).lower()]
    for shown in (facts.os_label, facts.hostname, facts.first_ipv4):
        if shown:
            fields.append(shown.lower())
    return fields


def _addresses(snap: VmSnapshot) -> list[str]:
    return [a.address.lower() for i in snap.facts.interfaces or () for a in i.addresses]


def _os_names(snap: VmSnapshot) -> list[str]:
    os = snap.facts.os
    names = [snap.facts.os_label or ""]
    if os is not None:
        names += [os.id or "", os.name or "", os.pretty_name or ""]
    return [n.lower() for n in names if n]


_FIELDS: dict[str, Callable[[VmSnapshot], list[str]]] = {
    "": search_fields,
    "ip": _addresses,
    "os": _os_names,
}


# -- columns, values and cells ------------------------------------------------------------

_STATE_ORDER = {
    AgentState.ERROR: 0,
    AgentState.UNREACHABLE: 1,
    AgentState.TIMEOUT: 2,
    AgentState.PENDING: 3,
    AgentState.REBOOTING: 4,
    AgentState.SUSPENDED: 5,
    AgentState.STOPPED: 6,
    AgentState.OK: 7,
}

_PENDING_LABELS = {
    "powerdown": "shutting down…",
    "halt": "halting…",
    "reboot": "rebooting…",
}


def agent_label(snap: VmSnapshot) -> str:
    """The AGENT cell's words: the state, or what this session did to the VM."""
    life = snap.lifecycle
    if life is not None:
        if snap.agent is life.state:
            return life.label
        if snap.agent is AgentState.OK:  # sent; the guest has not gone quiet yet
            return _PENDING_LABELS.get(life.action, "suspending…")
    return _AGENT_SYMBOL[snap.agent]


def natural_key(text: str) -> tuple[str | int, ...]:
    """`app-2` before `app-10`: digit runs compare as numbers (strings and numbers
    alternate, so two keys always compare position by position)."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(text.lower())))


_DIGITS = re.compile(r"(\d+)")


def _fullest_pct(snap: VmSnapshot) -> int | None:
    fs = snap.facts.fullest_filesystem
    if fs is None or fs.used_fraction is None:
        return None
    return round(fs.used_fraction * 100)


def _load1(snap: VmSnapshot) -> float | None:
    return snap.facts.load.load1 if snap.facts.load else None


def _cpu_percent(snap: VmSnapshot) -> int | None:
    """Whole percent: a cell changes when what it shows does."""
    cpu = snap.facts.cpu
    value = cpu.cpu_percent if cpu is not None else None
    return None if value is None else round(value)


def _disk_bps(snap: VmSnapshot) -> float | None:
    disk = snap.facts.disk_io
    return disk.disk_bps if disk is not None else None


def _freeze_rank(snap: VmSnapshot) -> tuple[int, float]:
    if snap.thaw_error is not None:
        return (0, 0.0)
    if snap.freeze is FreezeState.FROZEN:
        return (1, snap.thaw_deadline or float("inf"))
    if snap.freeze is FreezeState.UNKNOWN:
        return (2, 0.0)
    return (3, 0.0)


def _text_key(value: str | None) -> tuple[str | int, ...] | None:
    return natural_key(value) if value else None


@dataclass(frozen=True, slots=True)
class Column:
    """A fleet table column. Widths: `wanted` until the content says otherwise, never
    below `least` or (unless it is `grow`ing into spare width) above `most`."""

    key: str
    label: str
    wanted: int
    sort_key: Callable[[VmSnapshot], Any] | None  # None: the column does not sort
    justify: str = "left"
    least: int = 0  # 0: as wide as its label
    snug: int = 0  # a growing column is cut below this only when nothing else can go
    most: int = 0  # 0: `wanted`
    grow: float = 0.0  # share of the spare width, once every column has what it wants
    sort_letter: str = ""  # Shift+letter sorts by this column
    descending_first: bool = False  # biggest first when first chosen (FULL, LOAD, RTT, SEEN)
    # Shown only when the operator turns it on (dashboard.json "columns", the palette):
    # its facts cost requests on every poll of every VM while it is on.
    optional: bool = False

    @property
    def min_width(self) -> int:
        """Its label, and room for the sort arrow."""
        return self.least or len(self.label) + (1 if self.sort_key else 0)

    @property
    def max_width(self) -> int:
        return self.most or self.wanted


COLUMNS: tuple[Column, ...] = (
    Column("mark", "✓", 1, None),
    Column("vm", "VM", 24, lambda s: natural_key(s.id), least=12, snug=18, most=60, grow=2.0,
           sort_letter="V"),
    Column("hv", "HV", 8, lambda s: natural_key(s.ref.hypervisor), least=3, most=20,
           sort_letter="H"),
    Column("agent", "AGENT", 11, lambda s: (_STATE_ORDER[s.agent], agent_label(s)), most=16,
           sort_letter="A"),
    Column("os", "OS", 18, lambda s: _text_key(s.facts.os_label), least=8, snug=16, most=40,
           grow=1.5, sort_letter="O"),
    Column("host", "HOSTNAME", 18, lambda s: _text_key(s.facts.hostname), least=8, snug=12,
           most=40,
           grow=1.5, sort_letter="N"),
    Column("ip", "IPv4", 15, lambda s: _ip_key(s.facts.first_ipv4), sort_letter="I"),
    Column("fs", "FS", 11, _freeze_rank, least=6, sort_letter="F"),
    Column("full", "FULL", 5, _fullest_pct, "right", sort_letter="U", descending_first=True),
    Column("load", "LOAD", 5, _load1, "right", sort_letter="L", descending_first=True),
    Column("cpu", "CPU%", 5, _cpu_percent, "right", sort_letter="C", descending_first=True,
           optional=True),
    Column("io", "DISK I/O", 10, _disk_bps, "right", sort_letter="D", descending_first=True,
           optional=True),
    Column("rtt", "RTT", 6, lambda s: s.latency_ms, "right", sort_letter="R",
           descending_first=True),
    Column("seen", "SEEN", 5, lambda s: -s.last_seen if s.last_seen is not None else None,
           "right", sort_letter="E", descending_first=True),
)  # fmt: skip
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
COLUMN_INDEX = {c.key: i for i, c in enumerate(COLUMNS)}
SORTABLE = tuple(c.key for c in COLUMNS if c.sort_key is not None)
SORT_LETTERS = {c.sort_letter: c.key for c in COLUMNS if c.sort_letter}
OPTIONAL_COLUMNS = tuple(c.key for c in COLUMNS if c.optional)
# The columns whose value depends on the clock.
CLOCK_COLUMNS = (COLUMN_INDEX["fs"], COLUMN_INDEX["seen"])


def _ip_key(ip: str | None) -> tuple[int, ...] | None:
    if ip is None:
        return None
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (999,)


def column_label(key: str, sort_column: str, reverse: bool) -> str:
    """A header label, with ▲ or ▼ on the column the table is sorted by."""
    column = COLUMNS[COLUMN_INDEX[key]]
    if key != sort_column:
        return column.label
    return f"{column.label}{'▼' if reverse else '▲'}"


# Dropped in this order when the terminal is too narrow for every column at its
# minimum: the VM id already names its hypervisor; load, hostname, RTT and OS are the
# least needed to answer "is anything wrong?" (the optional columns, asked for, just
# after the hypervisor).
DROP_ORDER = ("hv", "io", "cpu", "load", "host", "rtt", "os")


_FS_WIDTH = {"thaw-failed": len("THAW FAILED"), "frozen": len("❄ 00:00"), "thawed": 6, "unknown": 1}


WIDTH_KEYS = ("vm", "hv", "agent", "os", "host", "ip", "fs")  # widths follow the content
_WIDTH_LIMITS = tuple(
    (COLUMNS[COLUMN_INDEX[k]].min_width, COLUMNS[COLUMN_INDEX[k]].max_width) for k in WIDTH_KEYS
)


def row_widths(snap: VmSnapshot) -> tuple[int, ...]:
    """How wide one VM's text is in each of WIDTH_KEYS (0: nothing to show)."""
    facts = snap.facts
    if snap.thaw_error is not None:
        fs = _FS_WIDTH["thaw-failed"]
    elif snap.freeze is FreezeState.FROZEN and snap.thaw_deadline is None:
        fs = len("❄ frozen")
    else:
        fs = _FS_WIDTH[snap.freeze.value]
    os_label, hostname, ip = facts.os_label, facts.hostname, facts.first_ipv4
    return (
        len(snap.id),
        len(snap.ref.hypervisor),
        len(agent_label(snap)),
        len(os_label) if os_label else 0,
        len(hostname) if hostname else 0,
        len(ip) if ip else 0,
        fs,
    )


def fit_content(widest: Iterable[int]) -> dict[str, int]:
    """Content widths from the widest text of each of WIDTH_KEYS, each kept between its
    column's least and most."""
    return {
        key: max(least, min(most, width or least))
        for key, width, (least, most) in zip(WIDTH_KEYS, widest, _WIDTH_LIMITS, strict=True)
    }


def content_widths(snapshots: Iterable[VmSnapshot]) -> dict[str, int]:
    """How wide each text column's content is, over these VMs (capped at the column's
    `most`): a column is no wider than what it holds, so the others get the room."""
    widest = [0] * len(WIDTH_KEYS)
    for snap in snapshots:
        for i, width in enumerate(row_widths(snap)):
            if width > widest[i]:
                widest[i] = width
    return fit_content(widest)


def fit_widths(
    available: int,
    padding: int,
    content: Mapping[str, int] | None = None,
    optional: Collection[str] = (),
) -> dict[str, int]:
    """Widths of the columns shown in a table `available` cells wide, in COLUMNS order,
    filling the whole width.

    Each column starts as wide as its content (`content`, else its `wanted` width). Too
    wide: the growing columns (VM, OS, hostname) give up width, widest first, down to
    their minimum; still too wide: columns are dropped in DROP_ORDER (never the mark, VM,
    agent state, address or freeze state). Room to spare: it goes to the growing columns.
    Optional columns take part only when named in `optional`.
    """
    content = content or {}
    offered = [c for c in COLUMNS if not c.optional or c.key in optional]
    shown = list(offered)

    def want(c: Column) -> int:
        return content.get(c.key, c.wanted)

    def shrink(widths: dict[str, int], floor: Callable[[Column], int]) -> int:
        """Narrow growing columns, widest first, down to `floor`; the width still missing."""
        over = sum(widths.values()) + 2 * padding * len(widths) - available
        while over > 0:
            candidates = [c for c in shown if c.grow and widths[c.key] > floor(c)]
            if not candidates:
                break
            widest = max(candidates, key=lambda c: widths[c.key] - floor(c))
            widths[widest.key] -= 1
            over -= 1
        return max(0, over)

    def snug(c: Column) -> int:
        return max(c.min_width, c.snug)

    # Growing columns are cut to `snug`, then whole columns go, then they are cut to
    # their minimum: an OS column cut to "Debian GN…" says less than a LOAD column.
    widths = {c.key: want(c) for c in shown}
    missing = shrink(widths, snug)
    dropped: list[str] = []
    for key in DROP_ORDER:
        if missing <= 0:
            break
        if not any(c.key == key for c in shown):
            continue
        shown = [c for c in shown if c.key != key]
        dropped.append(key)
        widths = {c.key: want(c) for c in shown}
        missing = shrink(widths, snug)
    if missing > 0:
        shrink(widths, lambda c: c.min_width)
    else:
        # A dropped column may fit again, its growing neighbours snug; OS, the last to
        # go, even cut to its minimum: "Debian GNU…" beats no OS at all.
        for key in reversed(dropped):
            wider = [c for c in offered if c.key == key or c in shown]
            shown, before = wider, shown
            trial = {c.key: want(c) for c in shown}
            if shrink(trial, snug) > 0:
                trial = {c.key: want(c) for c in shown}
                if key != DROP_ORDER[-1] or shrink(trial, lambda c: c.min_width) > 0:
                    shown = before
                    break
            widths = trial
    spare = available - sum(widths.values()) - 2 * padding * len(widths)
    growing = [c for c in shown if c.grow]
    if spare > 0 and growing:
        total = sum(c.grow for c in growing)
        given = 0
        for c in growing:
            share = int(spare * c.grow / total)
            widths[c.key] += share
            given += share
        widths[growing[0].key] += spare - given  # the rounding's leftover: to VM
    return widths


def sort_ids(snapshots: Iterable[VmSnapshot], column: str, reverse: bool) -> list[str]:
    """VM ids ordered by `column`, ties by id (naturally: 2 before 10); VMs without a
    value come last either way."""
    col = COLUMNS[COLUMN_INDEX[column]]
    key = col.sort_key or (lambda s: natural_key(s.id))
    have: list[tuple[Any, tuple[str | int, ...], str]] = []
    missing: list[tuple[tuple[str | int, ...], str]] = []
    for snap in snapshots:
        value = key(snap)
        name = natural_key(snap.id)
        if value is None:
            missing.append((name, snap.id))
        else:
            have.append((value, name, snap.id))
    if reverse:
        # Descending by value but still ascending by id within equal values.
        have.sort(key=lambda t: t[1])
        have.sort(key=lambda t: t[0], reverse=True)
    else:
        have.sort(key=lambda t: (t[0], t[1]))
    missing.sort()
    return [t[2] for t in have] + [vm_id for _, vm_id in missing]


class Tone(enum.Enum):
    """A row-wide colour, carried in each of the row's cell values as `(tone, value)`:
    the whole row of a VM in trouble takes its state's colour, as k9s does."""

    ALARM = "alarm"  # a failed thaw this session owes: error colour, bold state
    ERROR = "error"  # unreachable, or answering nonsense
    WARNING = "warning"  # connected, not answering in time
    QUIET = "quiet"  # shut down, suspended or rebooting from here: expected, muted


def row_tone(snap: VmSnapshot) -> Tone | None:
    if snap.thaw_error is not None:
        return Tone.ALARM
    agent = snap.agent
    if agent in (AgentState.STOPPED, AgentState.SUSPENDED, AgentState.REBOOTING):
        return Tone.QUIET
    if agent in (AgentState.UNREACHABLE, AgentState.ERROR):
        return Tone.ERROR
    if agent is AgentState.TIMEOUT:
        return Tone.WARNING
    return None


def row_values(snap: VmSnapshot, now: float, marked: bool) -> tuple[CellValue, ...]:
    """One hashable value per column: everything `render_cell` needs, and no more."""
    facts = snap.facts
    stale = snap.agent is not AgentState.OK
    if snap.thaw_error is not None:
        fs: CellValue = ("thaw-failed",)
    elif snap.freeze is FreezeState.FROZEN:
        if snap.thaw_deadline is not None:
            fs = ("frozen", int(max(0.0, snap.thaw_deadline - now) + 0.999))
        else:
            fs = ("frozen", None)
    else:
        fs = (snap.freeze.value,)
    load = _load1(snap)
    disk = _disk_bps(snap)
    latency = snap.latency_ms
    cells = (
        (marked,),
        (snap.id, stale),
        (snap.ref.hypervisor,),
        (snap.agent, agent_label(snap)),
        (facts.os_label, stale),
        (facts.hostname, stale),
        (facts.first_ipv4, stale),
        fs,
        (_fullest_pct(snap), stale),
        (None if load is None else round(load, 2), stale),
        (_cpu_percent(snap), stale),
        (None if disk is None else format_rate(disk), stale),
        (None if latency is None else round(latency, 1 if latency < 10 else 0), stale),
        (None if snap.last_seen is None else seen_step(now - snap.last_seen),),
    )
    tone = row_tone(snap)
    if tone is not None:
        # The whole row says so (a failed thaw until it is thawed or dismissed), not only
        # its state cell.
        return tuple((tone, cell) for cell in cells)
    return cells


FRESH_SECONDS = 10


def seen_step(age: float) -> int:
    """The SEEN value: the age at a coarse step, so a cell changes when what it says does.

    A VM polled every 5 s is between 0 and 5 s old all the time: shown to the second,
    every row on screen was rewritten every second for nothing. Under FRESH_SECONDS it is
    one value (shown `<10s`), then 10 s steps to a minute, then whole minutes, hours,
    days (what `format_age` shows there anyway).
    """
    s = max(0, int(age))
    if s < FRESH_SECONDS:
        return 0
    for step, below in ((10, 60), (60, 3600), (3600, 86400)):
        if s < below:
            return s - s % step
    return s - s % 86400


def placeholder_values(vm_id: str) -> tuple[CellValue, ...]:
    """The row of a VM that left the store a moment before its row is taken away."""
    return (
        (False,),
        (vm_id, True),
        ("",),
        (AgentState.PENDING, _AGENT_SYMBOL[AgentState.PENDING]),
        (None, True),
        (None, True),
        (None, True),
        ("unknown",),
        (None, True),
        (None, True),
        (None, True),
        (None, True),
        (None, True),
        (None,),
    )


def clock_key(snap: VmSnapshot, now: float) -> tuple[int | None, int | None]:
    """What of a row depends on the clock (thaw countdown, SEEN step), cheaply: the
    4 Hz tick rebuilds a row's values only when this changed."""
    countdown = None
    if (
        snap.thaw_error is None
        and snap.freeze is FreezeState.FROZEN
        and snap.thaw_deadline is not None
    ):
        countdown = int(max(0.0, snap.thaw_deadline - now) + 0.999)
    seen = None if snap.last_seen is None else seen_step(now - snap.last_seen)
    return countdown, seen


def clock_values(snap: VmSnapshot, now: float) -> tuple[CellValue, CellValue]:
    """The values of CLOCK_COLUMNS alone (cheaper than `row_values` for a timer tick)."""
    values = row_values(snap, now, False)
    return values[CLOCK_COLUMNS[0]], values[CLOCK_COLUMNS[1]]


_AGENT_SYMBOL = {
    AgentState.OK: "ok",
    AgentState.TIMEOUT: "timeout",
    AgentState.UNREACHABLE: "unreachable",
    AgentState.ERROR: "error",
    AgentState.PENDING: "…",
    AgentState.STOPPED: "stopped",
    AgentState.SUSPENDED: "suspended",
    AgentState.REBOOTING: "rebooting",
}


def _agent_style(state: AgentState, palette: Palette) -> Style:
    if state is AgentState.OK:
        return palette.ok
    if state is AgentState.TIMEOUT:
        return palette.warning
    if state in (AgentState.PENDING, AgentState.STOPPED, AgentState.SUSPENDED):
        return palette.stale
    if state is AgentState.REBOOTING:
        return palette.accent
    return palette.error


def _tone_style(tone: Tone, palette: Palette) -> Style:
    if tone is Tone.WARNING:
        return palette.warning
    if tone is Tone.QUIET:
        return palette.stale
    return palette.error


@lru_cache(maxsize=1 << 16)
def render_cell(index: int, value: CellValue, palette: Palette) -> Text:
    """The drawable cell for column `index` from its value; guest strings via `plain`.

    Cells with equal values share one `Text` (never mutated): "ok", "thawed", "hv1" are
    the same object in every row, which keeps the table's memory and GC work small.
    """
    if value and isinstance(value[0], Tone):
        tone, inner = value
        assert isinstance(tone, Tone) and isinstance(inner, tuple)
        text = render_cell(index, inner, palette).copy()
        text.stylize(_tone_style(tone, palette))
        if tone is Tone.ALARM or (tone is Tone.ERROR and COLUMN_KEYS[index] == "agent"):
            text.stylize(Style(bold=True))
        return text
    key = COLUMN_KEYS[index]
    width = COLUMNS[index].max_width
    if key == "mark":
        return Text("✓", style=palette.mark) if value[0] else Text(" ")
    if key == "agent":
        state, label = value
        assert isinstance(state, AgentState) and isinstance(label, str)
        style = _agent_style(state, palette)
        if label != _AGENT_SYMBOL[state] and state is AgentState.OK:
            style = palette.accent  # a power action on its way
        return Text(label, style=style)
    if key == "fs":
        kind = value[0]
        if kind == "thaw-failed":
            return Text("THAW FAILED", style=palette.error + Style(bold=True))
        if kind == "frozen":
            remaining = value[1]
            if remaining is None:
                return Text("❄ frozen", style=palette.frozen)
            assert isinstance(remaining, int)
            return Text("❄ " + format_countdown(remaining), style=palette.frozen + Style(bold=True))
        if kind == "thawed":
            return Text("thawed", style=palette.stale)
        return Text("?", style=palette.stale)
    if key == "seen":
        age = value[0]
        if age == 0:
            return Text(f"<{FRESH_SECONDS}s", justify="right")
        return Text(format_age(age if isinstance(age, int) else None), justify="right")
    stale = bool(value[-1]) if len(value) > 1 else False
    style = palette.stale if stale else Style()
    raw = value[0]
    if key in ("vm", "hv", "os", "host", "ip"):
        return plain(raw if isinstance(raw, str) else None, width, style=style)
    if key == "full":
        if raw is None:
            return Text("—", style=palette.stale, justify="right")
        assert isinstance(raw, int)
        if not stale:
            style = palette.error if raw >= 95 else palette.warning if raw >= 85 else style
        return Text(f"{raw}%", style=style, justify="right")
    if key == "load":
        if raw is None:
            return Text("—", style=palette.stale, justify="right")
        assert isinstance(raw, float)
        return Text(f"{raw:.2f}", style=style, justify="right")
    if key == "cpu":
        if raw is None:
            return Text("—", style=palette.stale, justify="right")
        assert isinstance(raw, int)
        return Text(f"{raw}%", style=style, justify="right")
    if key == "io":
        if raw is None:
            return Text("—", style=palette.stale, justify="right")
        assert isinstance(raw, str)
        return Text(raw, style=style, justify="right")
    if key == "rtt":
        if raw is None:
            return Text("—", style=palette.stale, justify="right")
        assert isinstance(raw, float | int)
        if not stale and raw >= 500:
            style = palette.warning
        return Text(format_latency(float(raw)), style=style, justify="right")
    raise KeyError(key)  # pragma: no cover


# -- the header ---------------------------------------------------------------------------


def header_text(
    counts: FleetCounts,
    *,
    label: str,
    read_only: bool,
    palette: Palette,
    holds: HoldSummary | None = None,
    width: int | None = None,
    max_down: int = 1,
    low_bandwidth: bool = False,
) -> Text:
    """The line that answers "is anything wrong?", then one line per hypervisor that is down.

    The first line never wraps: when it is wider than `width`, the least important parts
    go first (the label, the ok and pending counts, the VM total, the hypervisor summary,
    then the other counts);
    this session's frozen count and next thaw, failed thaws, the journal being settled
    and READ-ONLY always stay.
    """
    holds = holds or HoldSummary()
    parts: list[tuple[int, Text]] = []  # (drop rank: higher goes first, 0 never; text)

    def part(rank: int, *pieces: tuple[str, Style] | Text) -> None:
        text = Text(end="")
        for piece in pieces:
            if isinstance(piece, Text):
                text.append_text(piece)
            else:
                text.append(piece[0], style=piece[1])
        parts.append((rank, text))

    part(0, (" qgadash ", Style(bold=True)))
    if label:
        part(12, (" ", Style()), plain(label, 60))
    hvs = counts.hypervisors
    if hvs:
        summary = Text(f" · {len(hvs)} hypervisor{'s' if len(hvs) != 1 else ''} (", end="")
        hv_parts: list[tuple[str, Style]] = [(f"{counts.hypervisors_up} connected", Style())]
        if counts.hypervisors_connecting:
            hv_parts.append((f"{counts.hypervisors_connecting} connecting", palette.warning))
        down = counts.hypervisors_down
        if down:
            hv_parts.append((f"{len(down)} down", palette.error))
        for i, (piece, style) in enumerate(hv_parts):
            if i:
                summary.append(", ")
            summary.append(piece, style=style)
        summary.append(")")
        part(8, summary)
    part(9, (f" · {counts.total} VM{'s' if counts.total != 1 else ''} ", Style()))
    by = counts.by_state

    def chip(rank: int, symbol: str, n: int, what: str, style: Style) -> None:
        part(rank, ("  ", Style()), (f"{symbol} {n} {what}", style))

    chip(11, "●", by.get(AgentState.OK, 0), "ok", palette.ok)
    for state, symbol, style, rank in (
        (AgentState.TIMEOUT, "▲", palette.warning, 6),
        (AgentState.UNREACHABLE, "✖", palette.error, 5),
        (AgentState.ERROR, "!", palette.error, 4),
        (AgentState.PENDING, "…", palette.stale, 10),
        (AgentState.STOPPED, "■", palette.stale, 10),
        (AgentState.SUSPENDED, "◐", palette.stale, 10),
        (AgentState.REBOOTING, "↻", palette.accent, 10),
    ):
        if by.get(state):
            chip(rank, symbol, by[state], state.value, style)
    if holds.held:
        pieces: list[tuple[str, Style]] = [
            ("  ", Style()),
            (f"❄ {holds.held} frozen", palette.frozen + Style(bold=True)),
        ]
        if holds.next_thaw is not None:
            pieces.append((f" · next thaw {format_countdown(holds.next_thaw)}", palette.frozen))
        part(0, *pieces)
    if counts.frozen:
        chip(7, "❄", counts.frozen, "frozen by others", palette.frozen)
    if counts.thaw_errors:
        chip(0, "✖", counts.thaw_errors, "thaw failed", palette.error + Style(bold=True))
    if holds.settling:
        part(
            0,
            ("  ", Style()),
            ("⟳ settling holds of an earlier run…", palette.warning + Style(bold=True)),
        )
    if read_only:
        part(0, ("  ", Style()), (" READ-ONLY ", Style(reverse=True, bold=True) + palette.warning))
    if low_bandwidth:
        part(3, ("  ", Style()), ("low-bandwidth", palette.stale))
    if width is not None:
        while sum(t.cell_len for _, t in parts) > width:
            rank = max(r for r, _ in parts)
            if rank == 0:
                break
            drop = next(i for i, (r, _) in enumerate(parts) if r == rank)
            del parts[drop]
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for _, piece_text in parts:
        text.append_text(piece_text)
    down = counts.hypervisors_down
    for i, hv in enumerate(down[:max_down]):
        # One line each, cut (not wrapped) at the width; the count of the others first,
        # so it is never the part that is cut.
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(" ✖ ", style=palette.error)
        line.append_text(plain(hv.name, 40, style=palette.error + Style(bold=True)))
        line.append(f" {hv.state.value}", style=palette.error)
        if i == max_down - 1 and len(down) > max_down:
            line.append(f" (+{len(down) - max_down} more down)", style=palette.error)
        if hv.error:
            line.append(": ")
            line.append_text(plain(hv.error, 160))
        if width is not None:
            line.truncate(width, overflow="ellipsis")
        text.append("\n")
        text.append_text(line)
    return text
