"""In-process timing for the benchmark scripts."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, reps: int, warmup: bool = True) -> float:
    """Median seconds of ``reps`` calls of ``fn``, after one untimed call with ``warmup``
    (imports, caches and the first factorisation's allocations are not what is
    measured; a call of minutes, timed as a user runs it once, goes without)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
