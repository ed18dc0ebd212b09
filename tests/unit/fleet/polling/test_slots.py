"""Polls start on shared slots: never earlier than asked, at most a slot later."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qgadash.fleet.polling.slots import POLL_SLOT_SECONDS, poll_slot


@given(st.floats(0, 1e7), st.sampled_from([0.05, 0.3, 1.0, 5.0, 60.0]))
def test_a_poll_starts_at_the_next_slot_never_before_and_within_one_slot(
    when: float, interval: float
) -> None:
    slot = min(POLL_SLOT_SECONDS, interval / 10)
    start = poll_slot(when, interval)
    assert when - 1e-6 <= start < when + slot + 1e-6  # (float rounding)


def test_polls_asked_for_within_one_slot_share_its_start() -> None:
    asked = [100.01, 100.02, 100.05, 100.099]
    assert {poll_slot(t, 5.0) for t in asked} == {poll_slot(100.1, 5.0)}
    assert poll_slot(100.11, 5.0) > poll_slot(100.1, 5.0)  # the next slot


def test_a_short_interval_gets_slots_of_a_tenth_of_it() -> None:
    assert poll_slot(0.001, 0.3) <= 0.03 + 1e-9
    assert poll_slot(7.0, 0.0) == 7.0  # no interval: no slot
