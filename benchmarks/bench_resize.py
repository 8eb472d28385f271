"""Speed of the MATLAB-compatible `imresize` on a DIV2K-sized 2040x1356 RGB image (numpy and torch paths).

Each case is timed `--repeat` times after one warm-up call (which fills the weight cache and the
allocator); the median is reported as a markdown table, ready for docs/benchmarks.md.

    python benchmarks/bench_resize.py
    python benchmarks/bench_resize.py --repeat 20 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import numpy as np
import torch
from timing import time_calls

from mma.imaging.resize import imresize

WIDTH, HEIGHT = 2040, 1356


def _median_seconds(func: Callable[[], object], repeat: int) -> float:
    return statistics.median(time_calls(func, repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    as_float = image.astype(np.float64) / 255
    as_tensor = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255)
    cases: list[tuple[str, str, Callable[[], object]]] = []
    for factor in (2, 3, 4):
        shape = f"{HEIGHT}x{WIDTH} -> {HEIGHT // factor}x{WIDTH // factor}"
        cases += [
            (f"numpy uint8, 1/{factor}", shape, lambda f=factor: imresize(image, 1 / f)),
            (f"numpy float64, 1/{factor}", shape, lambda f=factor: imresize(as_float, 1 / f)),
            (f"torch float32, 1/{factor}", shape, lambda f=factor: imresize(as_tensor, 1 / f)),
        ]
    for factor in (2, 4):
        small = image[: HEIGHT // factor, : WIDTH // factor]
        shape = f"{HEIGHT // factor}x{WIDTH // factor} -> {HEIGHT}x{WIDTH}"
        cases.append((f"numpy uint8, x{factor}", shape, lambda s=small, f=factor: imresize(s, f)))

    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}"
    )
    print("\n| case | size (RGB) | median ms |\n|---|---|---:|")
    for name, shape, func in cases:
        print(f"| {name} | {shape} | {1000 * _median_seconds(func, args.repeat):.1f} |")


if __name__ == "__main__":
    main()
