"""Shared by the benchmark scripts: time a call after one warm-up run."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(func: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls, after one untimed call (compilation, caches, allocator)."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times
