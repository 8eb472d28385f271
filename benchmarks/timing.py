"""Shared by the benchmark scripts: the one timing loop, the clock that keeps sections to their budgets, and
the matmul rate that says how fast the machine is right now (the yardstick for numbers taken under load)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from math import inf


def time_calls(
    func: Callable[[], object],
    repeat: int,
    *,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
    limit_s: float = inf,
) -> list[float]:
    """Seconds of each of `repeat` calls, after `warmup` untimed ones (compilation, caches, allocator).

    `sync` waits for a device after each call (e.g. torch.cuda.synchronize), so a GPU's queued work is
    counted where it was launched. Calls stop once `limit_s` has passed since the first one (warm-up
    included), so a slow configuration cannot eat a time budget; at least one call is timed.
    """
    wait = sync or (lambda: None)
    begin = time.perf_counter()
    for _ in range(warmup):
        func()
        wait()
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        wait()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - begin > limit_s:
            break
    return times


def matmul_gflops(side: int = 1024, repeat: int = 5) -> float:
    """Best float32 `side` x `side` matmul rate in GFLOP/s over `repeat` products (after one warm-up): how
    fast this machine is right now, so a time taken beside it can be read as a share of the matrix rate."""
    import torch

    a, b = torch.rand(side, side), torch.rand(side, side)
    return 2 * side**3 / min(time_calls(lambda: a @ b, repeat)) / 1e9


class Clock:
    """Per-section deadlines, so that a slow section cannot eat the time of the ones after it: `budgets`
    gives each section's seconds, `scale` stretches them all (e.g. 10x for a dry run on a CPU)."""

    def __init__(self, budgets: Mapping[str, float], scale: float = 1.0) -> None:
        self.budgets = budgets
        self.scale = scale
        self.deadline = inf
        self.section = ""

    @contextlib.contextmanager
    def section_of(self, name: str) -> Iterator[None]:
        budget = self.budgets[name] * self.scale
        self.section, self.deadline = name, time.monotonic() + budget
        start = time.monotonic()
        print(f"\n## {name} (budget {budget:.0f} s)", flush=True)
        try:
            yield
        finally:
            print(f"({name}: {time.monotonic() - start:.0f} s)", flush=True)

    def spent(self, what: str) -> bool:
        """True (and says so) once the section's time is up: the caller skips `what`."""
        if time.monotonic() < self.deadline:
            return False
        print(f"skipped {what}: the {self.section} budget is spent", flush=True)
        return True
