"""The fleet table's shown rows, with what ordering and fitting them needs, kept per VM.

The fleet screen applies a batch of store changes several times a second. Sorting every
shown VM from its snapshot (a natural sort key built from each id, each column's sort
key) and measuring every row's text for the column widths cost ~100 ms at 10,000 VMs
and came back with every re-sort. Here each shown VM's sort value and text widths are
computed once per change of that VM, so a re-sort is one `sorted()` over keys already
at hand and the content widths are read from per-column tallies. No Textual.

What it answers is what a pass over the shown snapshots answers: `order()` is
`sort_ids(shown, column, reverse)` and `content_widths()` is `content_widths(shown)`
(the tests check both against those functions after random changes). One difference:
two ids with the same natural key (`vm-01` and `vm-1`, `A` and `a`) are ordered by the
id here, by the store's order in `sort_ids`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
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
        # Every id's place in natural order (`natural_key`, then the id itself), the
        # tie-break of every sort; ids not placed yet wait in `_unranked`.
        self._natural: dict[str, tuple[str | int, ...]] = {}
        self._rank: dict[str, int] = {}
        self._unranked: set[str] = set()
        # Each shown, placed VM's sort key (`_sort_entry`): built when its value
        # changes, so a sort is one `sorted` with a key lookup done in C.
        self._keys: dict[str, tuple[Any, ...]] = {}

    # -- reading -------------------------------------------------------------------------

    def __contains__(self, vm_id: object) -> bool:
        return vm_id in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def order(self) -> list[str]:
        """The shown ids by the sort column, ties and VMs without a value as `sort_ids`
        puts them (~7 ms at 10,000 VMs)."""
        if self._unranked:
            self._place_all()
        return sorted(self._values, key=self._keys.__getitem__, reverse=self.reverse)

    def _sort_entry(self, value: Any, place: int) -> tuple[Any, ...]:
        """What `order` sorts a VM by: its value, then its place in natural id order;
        VMs without a value after all the others, in natural order. Reversed (the whole
        list sorted biggest first), places are negated so that equal values still list
        in natural order, and the VMs without a value still come last."""
        if self.reverse:
            return (0, value, -place) if value is not None else (-1, -place)
        return (0, value, place) if value is not None else (1, place)

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
        self._keys.clear()
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
        place = self._rank.get(vm_id)
        if place is not None:
            self._keys[vm_id] = self._sort_entry(value, place)
        return True

    def discard(self, vm_id: str) -> None:
        """This VM is no longer shown (filtered out or gone)."""
        if vm_id in self._values:
            del self._values[vm_id]
            self._keys.pop(vm_id, None)
            del self._measured[vm_id]
            self._untally(self._widths.pop(vm_id))

    def forget(self, vm_ids: Iterable[str]) -> None:
        """These VMs left the fleet: their natural keys are not kept either."""
        for vm_id in vm_ids:
            self.discard(vm_id)
            if self._natural.pop(vm_id, None) is not None:
                self._rank.pop(vm_id, None)
                self._unranked.discard(vm_id)

    def _untally(self, widths: tuple[int, ...]) -> None:
        for tally, width in zip(self._tallies, widths, strict=True):
            left = tally[width] - 1
            if left:
                tally[width] = left
            else:
                del tally[width]

    def _place_all(self) -> None:
        """Place every known id in natural order again (new ids came), and the shown
        VMs' sort keys with their new places."""
        natural = self._natural
        ids = sorted(natural, key=lambda v: (natural[v], v))
        self._rank = rank = {vm_id: i for i, vm_id in enumerate(ids)}
        self._unranked.clear()
        entry = self._sort_entry
        self._keys = {vm_id: entry(value, rank[vm_id]) for vm_id, value in self._values.items()}


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
