"""Where large CPU tensors get their memory while the network runs: the process heap, not fresh pages.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB as blocks are
freed) with fresh pages from the kernel and hands them back on free. A CPU forward makes and drops
hundreds of such tensors, so each op's output was first page-faulted and zeroed by the kernel: a 320x240
x4 forward of MMA-T took a million page faults and 2-3 s of system time on top of 9 s of arithmetic
(docs/benchmarks.md, "CPU pace"). Inside `reuse_freed_memory()` freed blocks stay in the heap for the next
tensor instead; on leaving, the defaults come back and `malloc_trim` returns what is free to the system,
so the peak is the same and a long-lived process does not keep it.

Only glibc (Linux) has these knobs; elsewhere the context does nothing. The C library is asked through
`libc()`, which tests replace to see either answer on any machine. `$MMA_HEAP=system` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

HEAP_ENV = "MMA_HEAP"  # "system": leave malloc's thresholds alone
M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (a C int): blocks above 2 GiB still get their own pages.
KEEP_THRESHOLD = 2**31 - 1
# glibc's documented defaults, restored on leaving (setting a threshold ends glibc's own adjustment of it,
# so the first call's starting values are the ones that come back).
DEFAULT_MMAP_THRESHOLD = 128 * 1024
DEFAULT_TRIM_THRESHOLD = 128 * 1024

_lock = threading.Lock()
_depth = 0  # nested or concurrent users inside the context; the outermost one restores


@cache
def libc() -> Any | None:
    """The C library if it has glibc's mallopt and malloc_trim, else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallopt, lib.malloc_trim  # noqa: B018  (both must exist: glibc)
    except (OSError, AttributeError):
        return None
    return lib


def enabled() -> bool:
    """Whether `reuse_freed_memory` changes anything here: glibc present and not turned off."""
    return os.environ.get(HEAP_ENV, "").strip().lower() != "system" and libc() is not None


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Inside: freed tensors' memory is reused by the next ones without a round trip to the kernel."""
    global _depth
    lib = libc() if enabled() else None
    if lib is None:
        yield
        return
    with _lock:
        if _depth == 0:
            lib.mallopt(M_MMAP_THRESHOLD, KEEP_THRESHOLD)
            lib.mallopt(M_TRIM_THRESHOLD, KEEP_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
                lib.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                lib.malloc_trim(0)
