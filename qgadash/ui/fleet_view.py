"""The fleet table as data: columns, filter, sort keys, cell values. No Textual here.

A row is described per column by a small hashable *cell value* computed from a snapshot
(`row_values`); the table compares it with what it last drew and rebuilds only the
cells whose value changed (`render_cell`). Values that depend on the clock (the thaw
countdown, "last seen") are whole seconds, so they change at most once a second.
"""

from __future__ import annotations

import enum
import fnmatch
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rich.style import Style
from rich.text import Text

from qgadash.fleet.guard import Hold
from qgadash.fleet.model import AgentState, FreezeState, HypervisorStatus, VmSnapshot
from qgadash.transport.base import HypervisorState
from qgadash.ui.formatting import format_age, format_countdown, format_latency
from qgadash.ui.plain import plain

__all__ = [
    "COLUMNS",
    "Column",
    "FleetCounts",
    "FleetFilter",
    "HoldSummary",
    "Palette",
    "Tone",
    "count_fleet",
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
    tag: bool
    pattern: str
    glob: bool

    def hit(self, fields: Sequence[str], tags: Sequence[str]) -> bool:
        haystack = tags if self.tag else fields
        if self.glob:
            return any(fnmatch.fnmatchcase(f, self.pattern) for f in haystack)
        if self.tag:
            return self.pattern in haystack
        return any(self.pattern in f for f in haystack)


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """`/` filter: whitespace-separated terms, all of which must hold.

    A term is a substring, or a glob when it has `*?[`, matched case-insensitively
    against the VM id, hostname, IP addresses and OS; `tag:NAME` (NAME may be a glob)
    matches a tag; a leading `!` inverts the term.
    """

    text: str = ""
    terms: tuple[_Term, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FleetFilter:
        terms = []
        for raw in text.split():
            negate = raw.startswith("!")
            body = raw[1:] if negate else raw
            tag = body.lower().startswith("tag:")
            if tag:
                body = body[4:]
            if not body:
                continue
            body = body.lower()
            terms.append(_Term(negate, tag, body, any(c in body for c in "*?[")))
        return cls(text, tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, snap: VmSnapshot) -> bool:
        if not self.terms:
            return True
        fields = search_fields(snap)
        tags = [t.lower() for t in snap.ref.tags]
        return all(term.hit(fields, tags) != term.negate for term in self.terms)


def search_fields(snap: VmSnapshot) -> list[str]:
    """The lower-cased strings a filter term is matched against."""
    facts = snap.facts
    fields = [snap.id.lower()]
    if facts.hostname:
        fields.append(facts.hostname.lower())
    label = facts.os_label
    if label:
        fields.append(label.lower())
    if facts.os is not None:
        for extra in (facts.os.id, facts.os.pretty_name):
            if extra:
                fields.append(extra.lower())
    for iface in facts.interfaces or ():
        for addr in iface.addresses:
            fields.append(addr.address.lower())
    return fields


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


def _fullest_pct(snap: VmSnapshot) -> int | None:
    fs = snap.facts.fullest_filesystem
    if fs is None or fs.used_fraction is None:
        return None
    return round(fs.used_fraction * 100)


def _load1(snap: VmSnapshot) -> float | None:
    return snap.facts.load.load1 if snap.facts.load else None


def _freeze_rank(snap: VmSnapshot) -> tuple[int, float]:
    if snap.thaw_error is not None:
        return (0, 0.0)
    if snap.freeze is FreezeState.FROZEN:
        return (1, snap.thaw_deadline or float("inf"))
    if snap.freeze is FreezeState.UNKNOWN:
        return (2, 0.0)
    return (3, 0.0)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int
    sort_key: Callable[[VmSnapshot], Any] | None  # None: the column does not sort
    justify: str = "left"
    flex: tuple[int, int, float] | None = None  # (min, max, share of spare width)

    @property
    def max_width(self) -> int:
        return self.flex[1] if self.flex else self.width


COLUMNS: tuple[Column, ...] = (
    Column("mark", "✓", 1, None),
    Column("vm", "VM", 24, lambda s: s.id, flex=(16, 44, 2.0)),
    Column("hv", "HV", 8, lambda s: s.ref.hypervisor),
    Column("agent", "AGENT", 11, lambda s: _STATE_ORDER[s.agent]),
    Column("os", "OS", 18, lambda s: (s.facts.os_label or "").lower() or None, flex=(10, 32, 1.5)),
    Column(
        "host",
        "HOSTNAME",
        18,
        lambda s: (s.facts.hostname or "").lower() or None,
        flex=(10, 32, 1.5),
    ),
    Column("ip", "IPv4", 15, lambda s: _ip_key(s.facts.first_ipv4)),
    Column("fs", "FS", 11, _freeze_rank),
    Column("full", "FULL", 4, _fullest_pct, "right"),
    Column("load", "LOAD", 5, _load1, "right"),
    Column("rtt", "RTT", 6, lambda s: s.latency_ms, "right"),
    Column("seen", "SEEN", 4, lambda s: -s.last_seen if s.last_seen is not None else None, "right"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
COLUMN_INDEX = {c.key: i for i, c in enumerate(COLUMNS)}
SORTABLE = tuple(c.key for c in COLUMNS if c.sort_key is not None)
# The columns whose value depends on the clock.
CLOCK_COLUMNS = (COLUMN_INDEX["fs"], COLUMN_INDEX["seen"])


def _ip_key(ip: str | None) -> tuple[int, ...] | None:
    if ip is None:
        return None
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (999,)


# Dropped in this order when the terminal is too narrow for every column at its
# minimum: the VM id already names its hypervisor; load, hostname, RTT and OS are the
# least needed to answer "is anything wrong?".
DROP_ORDER = ("hv", "load", "host", "rtt", "os")


def fit_widths(available: int, padding: int) -> dict[str, int]:
    """Widths of the columns shown in a table `available` cells wide, in COLUMNS order.

    Fixed columns keep theirs; the flexible ones (VM, OS, hostname) share what is left
    between their minimum and maximum; when even the minimums do not fit, columns are
    dropped in DROP_ORDER, never the mark, VM, agent state, address or freeze state.
    """
    shown = list(COLUMNS)

    def minimum() -> int:
        return sum(c.flex[0] if c.flex else c.width for c in shown) + 2 * padding * len(shown)

    for key in DROP_ORDER:
        if minimum() <= available:
            break
        shown = [c for c in shown if c.key != key]
    fixed = sum(c.width for c in shown if c.flex is None)
    spare = available - fixed - 2 * padding * len(shown)
    flexible = [c for c in shown if c.flex is not None]
    widths = {c.key: c.width for c in shown}
    for c in flexible:
        assert c.flex is not None
        widths[c.key] = c.flex[0]
    spare -= sum(widths[c.key] for c in flexible)
    while spare > 0:
        growing = [c for c in flexible if c.flex is not None and widths[c.key] < c.flex[1]]
        if not growing:
            break
        total = sum(c.flex[2] for c in growing if c.flex is not None)
        given = 0
        for c in growing:
            assert c.flex is not None
            share = max(1, int(spare * c.flex[2] / total))
            share = min(share, c.flex[1] - widths[c.key], spare - given)
            widths[c.key] += share
            given += share
        if given == 0:
            break
        spare -= given
    return widths


def sort_ids(snapshots: Iterable[VmSnapshot], column: str, reverse: bool) -> list[str]:
    """VM ids ordered by `column`, ties by id; VMs without a value come last either way."""
    col = COLUMNS[COLUMN_INDEX[column]]
    key = col.sort_key or (lambda s: s.id)
    have: list[tuple[Any, str]] = []
    missing: list[str] = []
    for snap in snapshots:
        value = key(snap)
        if value is None:
            missing.append(snap.id)
        else:
            have.append((value, snap.id))
    if reverse:
        # Descending by value but still ascending by id within equal values.
        have.sort(key=lambda pair: pair[1])
        have.sort(key=lambda pair: pair[0], reverse=True)
    else:
        have.sort()
    missing.sort()
    return [vm_id for _, vm_id in have] + missing


class Tone(enum.Enum):
    """A row-wide colour, carried in each of the row's cell values as `(tone, value)`."""

    ALARM = "alarm"  # a failed thaw: the error colour


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
    latency = snap.latency_ms
    cells = (
        (marked,),
        (snap.id, stale),
        (snap.ref.hypervisor,),
        (snap.agent,),
        (facts.os_label, stale),
        (facts.hostname, stale),
        (facts.first_ipv4, stale),
        fs,
        (_fullest_pct(snap), stale),
        (None if load is None else round(load, 2), stale),
        (None if latency is None else round(latency, 1 if latency < 10 else 0), stale),
        (None if snap.last_seen is None else int(now - snap.last_seen),),
    )
    if snap.thaw_error is not None:
        # A thaw this session owes failed: the whole row says so until it is thawed or
        # dismissed, not only the FS cell.
        return tuple((Tone.ALARM, cell) for cell in cells)
    return cells


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
    if state is AgentState.PENDING:
        return palette.stale
    return palette.error


@lru_cache(maxsize=1 << 16)
def render_cell(index: int, value: CellValue, palette: Palette) -> Text:
    """The drawable cell for column `index` from its value; guest strings via `plain`.

    Cells with equal values share one `Text` (never mutated): "ok", "thawed", "hv1" are
    the same object in every row, which keeps the table's memory and GC work small.
    """
    if value and value[0] is Tone.ALARM:
        inner = value[1]
        assert isinstance(inner, tuple)
        text = render_cell(index, inner, palette).copy()
        text.stylize(palette.error)
        return text
    key = COLUMN_KEYS[index]
    width = COLUMNS[index].max_width
    if key == "mark":
        return Text("✓", style=palette.mark) if value[0] else Text(" ")
    if key == "agent":
        state = value[0]
        assert isinstance(state, AgentState)
        return Text(_AGENT_SYMBOL[state], style=_agent_style(state, palette))
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
    max_down: int = 3,
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
    for hv in down[:max_down]:
        text.append("\n")
        text.append(" ✖ ", style=palette.error)
        text.append_text(plain(hv.name, 40, style=palette.error + Style(bold=True)))
        text.append(f" {hv.state.value}", style=palette.error)
        if hv.error:
            text.append(": ")
            text.append_text(plain(hv.error, 160))
    if len(down) > max_down:
        text.append(f"\n   and {len(down) - max_down} more hypervisors down", style=palette.error)
    return text
