"""Host-side cost of `mma.upscale`: everything but the network, timed with a stand-in network.

Why: on an H200 a 1920x1080 x4 upscale took 4.2 s while the network's share is about 1.4 s
(docs/benchmarks.md, "GPU"). Replacing MMA with nearest-neighbour upscaling (free next to it) leaves the work
around the network: float conversion, tiling, the NaN check, blending, rounding into the output. This prints
the wall time of each call and the functions that took the most time (cProfile) in the last one.

    python benchmarks/bench_upscale_host.py                     # 1920x1080 at x4, automatic tiles
    python benchmarks/bench_upscale_host.py --tile 0 --repeat 3
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import torch
from torch import nn

from mma.engine import Engine


class Nearest(nn.Module):
    """A stand-in network: nearest-neighbour upscaling, which costs next to nothing."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080", help="input WIDTHxHEIGHT")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", default="auto", help="auto, 0 (whole image) or a size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10, help="profile rows printed")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    tile = args.tile if args.tile == "auto" else int(args.tile)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    engine = Engine(Nearest(args.scale), scale=args.scale, device="cpu", tile=tile)
    print(
        f"{width}x{height} x{args.scale}, tile {tile}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for index in range(args.repeat):
        profiler = cProfile.Profile() if index == args.repeat - 1 else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        engine.upscale_array(image)
        if profiler:
            profiler.disable()
        print(f"call {index + 1}: {time.perf_counter() - start:.2f} s" + (" (profiled)" if profiler else ""))
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.rows)


if __name__ == "__main__":
    main()
