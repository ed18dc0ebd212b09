"""The fleet table's shown rows, with what ordering and fitting them needs, kept per VM.

The fleet screen applies a batch of store changes several times a second. Sorting every
shown VM from its snapshot (a natural sort key built from each id, each column's sort
key) and measuring every row's text for the column widths cost ~100 ms at 10,000 VMs
and came back with every re-sort. Here each shown VM's sort value and text widths are
computed once per change of that VM, and the content widths are read from per-column
tallies. A re-sort sorts the shown ids, taken in natural id order, by their bare values:
the sort is stable, so ties stay in natural order without a tie-break in the key, and
bare floats (RTT, load: the columns that re-sort every second) take CPython's fast
float comparison (~2 ms at 10,000 VMs where (flag, value, place) tuples took ~17).
No Textual.

What it answers is what a pass over the shown snapshots answers: `order()` is
`sort_ids(shown, column, reverse)` and `content_widths()` is `content_widths(shown)`
(the tests check both against those functions after random changes). One difference:
two ids with the same natural key (`vm-01` and `vm-1`, `A` and `a`) are ordered by the
id here, by the store's order in `sort_ids`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import filterfalse
from typing import Any

from qgadash.fleet.model import VmSnapshot
from qgadash.ui.fleet_view import (
    COLUMN_INDEX,
    COLUMNS,
    WIDTH_KEYS,
    fit_content,
    natural_key,
    row_widths,
)

__all__ = ["ShownRows"]


class ShownRows:
    """The VMs the fleet table shows: membership, sort values and text widths per VM.

    `put` a shown VM's new snapshot, `discard` one that left; `order` and
    `content_widths` then answer over every shown VM without visiting the snapshots.
    """

    def __init__(self, column: str = "vm", reverse: bool = False) -> None:
        self.column = column
        self.reverse = reverse
        self._sort_key = COLUMNS[COLUMN_INDEX[column]].sort_key
        self._values: dict[str, Any] = {}  # shown VM id -> its sort value (None: none)
        self._widths: dict[str, tuple[int, ...]] = {}  # shown VM id -> row_widths
        self._measured: dict[str, VmSnapshot] = {}  # shown VM id -> the snapshot measured
        self._tallies: tuple[Counter[int], ...] = tuple(Counter() for _ in WIDTH_KEYS)
        # Every known id in natural order (`natural_key`, then the id itself): the order
        # a sort starts from, so ties keep it. Ids not placed yet wait in `_unranked`.
        self._natural: dict[str, tuple[str | int, ...]] = {}
        self._in_natural_order: list[str] = []
        self._unranked: set[str] = set()
        self._forgotten = False
        self._missing: set[str] = set()  # shown VMs without a sort value: listed last

    # -- reading -------------------------------------------------------------------------

    def __contains__(self, vm_id: object) -> bool:
        return vm_id in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def order(self) -> list[str]:
        """The shown ids by the sort column (biggest first when reversed); equal values
        in natural id order; VMs without a value after all the others, in natural order
        (as `sort_ids` puts them; ~3 ms at 10,000 VMs)."""
        if self._unranked:
            self._place_all()
        elif self._forgotten:
            natural = self._natural
            self._in_natural_order = [v for v in self._in_natural_order if v in natural]
            self._forgotten = False
        values = self._values
        # Filtering with C-level iterators: a Python loop over 10,000 ids cost ~6 ms.
        shown: Iterable[str] = self._in_natural_order
        if len(values) != len(self._in_natural_order):  # some known VMs are not shown
            shown = filter(values.__contains__, shown)
        missing: list[str] = []
        if self._missing:
            shown = list(shown)
            missing = list(filter(self._missing.__contains__, shown))
            shown = filterfalse(self._missing.__contains__, shown)
        valued = list(shown)
        if self.column != "vm" or self.reverse:  # natural order is the order by VM
            # Stable, reversed too: equal values keep their natural order.
            valued.sort(key=values.__getitem__, reverse=self.reverse)
        valued += missing
        return valued

    def content_widths(self) -> dict[str, int]:
        """`fleet_view.content_widths` over the shown VMs."""
        return fit_content(max(tally) if tally else 0 for tally in self._tallies)

    # -- writing -------------------------------------------------------------------------

    def reset(self, snapshots: Iterable[VmSnapshot], column: str, reverse: bool) -> None:
        """Exactly these VMs, sorted by `column`."""
        self.column = column
        self.reverse = reverse
        self._sort_key = COLUMNS[COLUMN_INDEX[column]].sort_key
        self._values.clear()
        self._missing.clear()
        self._widths.clear()
        self._measured.clear()
        for tally in self._tallies:
            tally.clear()
        for snap in snapshots:
            self.put(snap)

    def put(self, snap: VmSnapshot, vm_id: str | None = None) -> bool:
        """Show this VM as `snap` says (new or changed); `vm_id`: its id, when the
        caller has it at hand. True if its sort value changed (or it is new): the order
        may have to change."""
        if vm_id is None:
            vm_id = snap.id
        measured = self._measured.get(vm_id)
        if measured is None or not _same_widths(measured, snap):
            widths = row_widths(snap)
            old_widths = self._widths.get(vm_id)
            if old_widths != widths:
                if old_widths is not None:
                    self._untally(old_widths)
                self._widths[vm_id] = widths
                for tally, width in zip(self._tallies, widths, strict=True):
                    tally[width] += 1
        self._measured[vm_id] = snap
        if vm_id not in self._natural:
            self._natural[vm_id] = natural_key(vm_id)
            self._unranked.add(vm_id)
        if self.column == "vm":
            value: Any = self._natural[vm_id]
        else:
            assert self._sort_key is not None
            value = self._sort_key(snap)
        new = vm_id not in self._values
        if not new and self._values[vm_id] == value:
            return False
        self._values[vm_id] = value
        if value is None:
            self._missing.add(vm_id)
        else:
            self._missing.discard(vm_id)
        return True

    def discard(self, vm_id: str) -> None:
        """This VM is no longer shown (filtered out or gone)."""
        if vm_id in self._values:
            del self._values[vm_id]
            self._missing.discard(vm_id)
            del self._measured[vm_id]
            self._untally(self._widths.pop(vm_id))

    def forget(self, vm_ids: Iterable[str]) -> None:
        """These VMs left the fleet: their natural keys are not kept either."""
        for vm_id in vm_ids:
            self.discard(vm_id)
            if self._natural.pop(vm_id, None) is not None:
                self._unranked.discard(vm_id)
                self._forgotten = True  # still in `_in_natural_order`: dropped there lazily

    def _untally(self, widths: tuple[int, ...]) -> None:
        for tally, width in zip(self._tallies, widths, strict=True):
            left = tally[width] - 1
            if left:
                tally[width] = left
            else:
                del tally[width]

    def _place_all(self) -> None:
        """Put every known id in natural order again (new ids came)."""
        natural = self._natural
        self._in_natural_order = sorted(natural, key=lambda v: (natural[v], v))
        self._unranked.clear()
        self._forgotten = False


def _same_widths(old: VmSnapshot, new: VmSnapshot) -> bool:
    """Whether `row_widths` of `new` is surely that of `old`: what it reads is the same
    objects (a poll replaces the load, the latency, the times: not these)."""
    old_facts, new_facts = old.facts, new.facts
    return (
        old.ref is new.ref
        and old.agent is new.agent
        and old.lifecycle is new.lifecycle
        and old.freeze is new.freeze
        and (old.thaw_error is None) is (new.thaw_error is None)
        and (old.thaw_deadline is None) is (new.thaw_deadline is None)
        and (
            old_facts is new_facts
            or (
                old_facts.os is new_facts.os
                and old_facts.hostname is new_facts.hostname
                and old_facts.interfaces is new_facts.interfaces
            )
        )
    )
