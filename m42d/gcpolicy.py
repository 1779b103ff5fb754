"""The relay's garbage-collector settings: a heap of long-lived connections, rarely swept.

A relay holds thousands of connections whose objects (tasks, cancel scopes,
streams, peers) live for minutes to hours, and each join allocates a few
thousand more.  With CPython's default thresholds (700, 10, 10) the young
generation is collected every 700 net allocations, the middle one every
10 of those, and a full collection walks every live object again: in
section d of the benchmarks (1,000 rooms) cyclic GC was ~19% of the relay's
samples during the joins, the largest single cost after the interpreter
loop itself (docs/benchmarks.md, the fifth pass).

So :func:`tune_for_serving`, called once before the relay starts serving,
moves what exists at start-up (modules, classes, configuration) out of the
collector's sight with :func:`gc.freeze` and raises the young generation's
threshold to :data:`GEN0_THRESHOLD`, so the older generations are visited
~14 times less often.  Garbage in reference cycles is still collected; it
waits at most ~10,000 allocations longer.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GEN0_THRESHOLD", "tune_for_serving"]

GEN0_THRESHOLD: Final = 10_000


def tune_for_serving() -> None:
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GEN0_THRESHOLD), middle, old)
