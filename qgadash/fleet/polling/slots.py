"""When a VM's next poll starts: on a shared time slot, not at its own instant.

Each VM keeps its own phase, spread over the interval, so a fleet is a steady trickle
of polls rather than a storm. Left at their own instants, though, 500 VMs polled every
5 s wake the event loop 100 times a second for one poll each, and a wake-up (the
timer, the epoll round trip, the send and the receive each in an iteration of their
own) costs more than the poll: measured with `bench/scale.py --sizes 500`, 1,460 µs
of CPU per poll, 14.6 % of a core. Rounded up to the next 100 ms slot the same polls
come ten to a wake-up: 838 µs per poll, 8.2 %. Staleness grows by at most a slot; the
RTT shown grows by the few other replies read in the same iteration.
"""

from __future__ import annotations

import math

__all__ = ["POLL_SLOT_SECONDS", "poll_slot"]

POLL_SLOT_SECONDS = 0.1  # at most a tenth of the interval (see `poll_slot`)


def poll_slot(when: float, interval: float) -> float:
    """The start of the first slot at or after `when` (loop time, seconds); slots are
    `POLL_SLOT_SECONDS` long, shorter for intervals under a second (a tenth of it)."""
    slot = min(POLL_SLOT_SECONDS, interval / 10)
    if slot <= 0:
        return when
    return math.ceil(when / slot) * slot
