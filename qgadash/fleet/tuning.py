"""Process tuning for a fleet-sized process, chosen by the entry points (the CLI, the
dashboard, the benchmarks), never by the engine: a test process keeps Python's defaults.
"""

from __future__ import annotations

import gc

__all__ = ["settle_garbage_collector"]


def settle_garbage_collector() -> None:
    """Move what exists now (modules, inventory, sessions) out of the collector's sight.

    With thousands of VMs a full collection walks millions of long-lived objects and
    stalls the loop for seconds (measured: 2.9 s at 10,000 VMs; 100-300 ms dashboard
    stutters at 5,000). Entry points have the engine call this once its inventory exists
    (`FleetEngine(after_discovery=...)`), and the dashboard again a few seconds after
    start, when its rows and first facts exist too. Freezing them and collecting less
    often keeps pauses short; reference counting still frees garbage.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)
