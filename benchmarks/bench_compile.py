"""Does torch.compile's CPU backend pay for MMA's elementwise work? One block's FFN, eager against compiled.

The FFN holds most of a block's elementwise passes (GELU and the gate's product) between oneDNN convs. This
times it on a 320x240 feature map (MMA-T, channels-last, inside `mma.heap.reuse_freed_memory` as the engine
runs), eager and compiled (inductor, static shapes), median of 5 calls, and the compile time of the first
call, which a one-image CLI run would pay (a warm inductor cache on disk makes it shorter).

    python benchmarks/bench_compile.py --dtype fp32
    python benchmarks/bench_compile.py --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timing import time_calls

from mma.api import load_model
from mma.heap import reuse_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--size", nargs=2, type=int, default=[240, 320], metavar=("H", "W"))
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ffn = load_model("mma-t-x4", dtype=args.dtype).network.body[0].ffn
    x = torch.randn(1, 48, *args.size, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), reuse_freed_memory():
        eager = statistics.median(time_calls(lambda: ffn(x), 5))
        compiled = torch.compile(ffn, dynamic=False)
        start = time.perf_counter()
        compiled(x)
        first = time.perf_counter() - start
        fast = statistics.median(time_calls(lambda: compiled(x), 5))
        difference = (compiled(x).float() - ffn(x).float()).abs().max().item()
    print(
        f"{args.dtype} FFN on {args.size[0]}x{args.size[1]}: eager {1e3 * eager:.1f} ms, compiled "
        f"{1e3 * fast:.1f} ms, first compiled call {first:.1f} s; max difference {difference:.2e}"
    )


if __name__ == "__main__":
    main()
