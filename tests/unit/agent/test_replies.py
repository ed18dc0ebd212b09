"""Reply parsing: a counter of the wrong type is an error, never a zero (issue 15)."""

from __future__ import annotations

from typing import Any

import pytest

from qgadash.agent.replies import ReplyShapeError, parse_interfaces

COUNTERS = (
    "rx-bytes", "rx-packets", "rx-errs", "rx-dropped",
    "tx-bytes", "tx-packets", "tx-errs", "tx-dropped",
)  # fmt: skip


def _nic(**stats: Any) -> list[dict[str, Any]]:
    return [{"name": "eth0", "statistics": stats}]


@pytest.mark.parametrize("wrong", [False, "", [], {}, "0", 1.5, -1])
def test_a_counter_of_the_wrong_type_is_an_error_not_zero(wrong: Any) -> None:
    stats = {key: 1 for key in COUNTERS}
    stats["rx-bytes"] = wrong
    with pytest.raises(ReplyShapeError, match="rx-bytes"):
        parse_interfaces(_nic(**stats))


def test_missing_and_null_counters_count_as_zero() -> None:
    """Agents leave out counters an interface lacks (and some send null)."""
    (nic,) = parse_interfaces(_nic(**{"rx-bytes": 7, "tx-bytes": None}))
    assert nic.stats is not None
    assert (nic.stats.rx_bytes, nic.stats.tx_bytes, nic.stats.rx_packets) == (7, 0, 0)
