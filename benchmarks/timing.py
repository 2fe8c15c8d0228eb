"""The timer the benchmark scripts share (imported as a sibling module: ``python benchmarks/x.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    if warmup:
        fn()  # plans, allocator, lazy initialisation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
