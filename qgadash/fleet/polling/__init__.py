"""The poll path: what a poll sends, how replies become facts, and what it remembers.

This is where the poll's speed tricks live, each with what it buys: the cache of last
replies, shared parses and command lists (`cache.py`), one rebuild of a VM's facts per
poll (`facts.py`), polls started on shared 100 ms slots (`slots.py`). The codec's lazy
replies (`qgadash.agent.codec`: a reply's body kept as bytes, its id read from the
tail) are the agent layer's part; everything else in the package is plain typed code.
"""

from qgadash.fleet.polling.cache import PollCache
from qgadash.fleet.polling.plan import BENCH_COMMANDS, FAST_COMMANDS, SLOW_COMMANDS, PollPlan
from qgadash.fleet.polling.poll import PollOutcome, failed_outcome, poll_with

__all__ = [
    "BENCH_COMMANDS",
    "FAST_COMMANDS",
    "SLOW_COMMANDS",
    "PollCache",
    "PollOutcome",
    "PollPlan",
    "failed_outcome",
    "poll_with",
]
