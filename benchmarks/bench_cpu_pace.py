"""CPU pace of one MMA forward beside the matrix rate of the same cores, measured in the same run.

The ratio `(conv + matmul FLOPs of the forward / its time) / (FLOP rate of a 2048x2048 float32 matmul)`
is the forward's share of what the cores can do on dense arithmetic; measuring both in one run makes it
robust to a shared or throttled machine (both slow down together). Times are medians of `--repeats`
forwards, with a matmul measurement interleaved before each.

    python benchmarks/bench_cpu_pace.py                         # bundled MMA-T x4, 320x240 input
    python benchmarks/bench_cpu_pace.py --profile               # plus torch.profiler's top operators
    python benchmarks/bench_cpu_pace.py --dtype bf16 --size 128 128
    python benchmarks/bench_cpu_pace.py --heap system           # malloc's defaults: fresh pages per tensor
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from timing import matmul_gflops

from mma.heap import reuse_freed_memory

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dense_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of the forward's convolutions and matrix products (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def load_network(name: str, scale: int, dtype: torch.dtype) -> torch.nn.Module:
    from mma.weights.loaded import load

    return load(name, scale).to("cpu", dtype).network


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mma-t", help="registry name or weights file (default mma-t)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", nargs=2, type=int, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    parser.add_argument(
        "--heap",
        choices=["reuse", "system"],
        default="reuse",
        help="reuse: each forward inside mma.heap.reuse_freed_memory, as the engine runs it; system: malloc's defaults",
    )
    args = parser.parse_args()

    heap_policy = reuse_freed_memory if args.heap == "reuse" else contextlib.nullcontext
    dtype = DTYPES[args.dtype]
    network = load_network(args.model, args.scale, dtype)
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0)).to(dtype)
    flops = dense_flops(network, x)
    times, rates = [], []
    with torch.inference_mode():
        network(x)  # warm-up: numba compilation, oneDNN primitives, allocator
        for _ in range(args.repeats):
            rates.append(matmul_gflops(2048, repeat=3) * 1e9)
            with heap_policy():
                start = time.perf_counter()
                network(x)
                times.append(time.perf_counter() - start)
    seconds, rate = statistics.median(times), statistics.median(rates)
    print(
        f"{args.model} x{args.scale} {args.dtype} {args.size[0]}x{args.size[1]}, "
        f"{torch.get_num_threads()} threads: forward {seconds:.2f} s (median of {args.repeats}; "
        f"all {', '.join(f'{t:.2f}' for t in times)}), {flops / 1e9:.0f} GFLOP conv+mm "
        f"= {flops / seconds / 1e9:.0f} GFLOP/s; matmul {rate / 1e9:.0f} GFLOP/s; "
        f"ratio {flops / seconds / rate:.2f}; heap {args.heap}"
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), heap_policy(), profile(activities=[ProfilerActivity.CPU]) as prof:
            network(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
