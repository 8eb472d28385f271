"""CPU pace of one MMA forward beside the matrix rate of the same cores, measured in the same run.

The ratio `(conv + matmul FLOPs of the forward / its time) / (FLOP rate of a 2048x2048 float32 matmul)`
is the forward's share of what the cores can do on dense arithmetic; measuring both in one run makes it
robust to a shared or throttled machine (both slow down together). Times are medians of `--repeats`
forwards, with a matmul measurement interleaved before each.

    python benchmarks/bench_cpu_pace.py                         # bundled MMA-T x4, 320x240 input
    python benchmarks/bench_cpu_pace.py --profile               # plus torch.profiler's top operators
    python benchmarks/bench_cpu_pace.py --dtype bf16 --size 128 128
    python benchmarks/bench_cpu_pace.py --heap system           # malloc's defaults: fresh pages per tensor
    python benchmarks/bench_cpu_pace.py --breakdown             # seconds per part of the network

Each forward's minor page faults and system time (getrusage) are printed too: the kernel's share of a
forward that takes fresh pages for its tensors. `--breakdown` times the network's parts with forward hooks
(torch.profiler's per-operator times of oneDNN convolutions were several times their hook-timed wall
time on this machine, so the parts are timed by the clock instead).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
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


def part_times(network: torch.nn.Module, x: torch.Tensor, heap_policy) -> tuple[float, dict[str, float]]:
    """Wall time of one forward and of its parts: the blocks' norms, Vim branches (and their scan pairs),
    channel-attention branches and FFNs, and the rest (first conv, conv after the body, upsampler, last conv)."""
    from mma import ops

    seconds: dict[str, float] = collections.defaultdict(float)
    started: dict[str, float] = {}
    handles = []

    def timed(part: str, module: torch.nn.Module) -> None:
        def before(*_: object) -> None:
            started[part] = time.perf_counter()

        def after(*_: object) -> None:
            seconds[part] += time.perf_counter() - started[part]

        handles.extend([module.register_forward_pre_hook(before), module.register_forward_hook(after)])

    for block in network.body:
        for name, module in (("norms", block.norm1), ("norms", block.norm2), ("ffn", block.ffn)):
            timed(name, module)
        for name in ("mamba", "channel_attention", "cnn"):
            if hasattr(block.attn, name):
                timed(name, getattr(block.attn, name))
    pair = ops.selective_scan_pair

    def timed_pair(*args, **kwargs):
        start = time.perf_counter()
        result = pair(*args, **kwargs)
        seconds["  of which scan pairs"] += time.perf_counter() - start
        return result

    ops.selective_scan_pair = timed_pair
    try:
        with torch.inference_mode(), heap_policy():
            start = time.perf_counter()
            network(x)
            total = time.perf_counter() - start
    finally:
        ops.selective_scan_pair = pair
        for handle in handles:
            handle.remove()
    parts = dict(seconds)
    parts["rest (first conv, conv after body, upsampler, last conv)"] = total - sum(
        v for k, v in parts.items() if not k.startswith(" ")
    )
    return total, parts


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
    parser.add_argument("--breakdown", action="store_true", help="time the network's parts (forward hooks)")
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
    times, rates, faults, system = [], [], [], []
    with torch.inference_mode():
        network(x)  # warm-up: numba compilation, oneDNN primitives, allocator
        for _ in range(args.repeats):
            rates.append(matmul_gflops(2048, repeat=3) * 1e9)
            with heap_policy():
                before = resource.getrusage(resource.RUSAGE_SELF)
                start = time.perf_counter()
                network(x)
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_SELF)
            faults.append(after.ru_minflt - before.ru_minflt)
            system.append(after.ru_stime - before.ru_stime)
    seconds, rate = statistics.median(times), statistics.median(rates)
    print(
        f"{args.model} x{args.scale} {args.dtype} {args.size[0]}x{args.size[1]}, "
        f"{torch.get_num_threads()} threads: forward {seconds:.2f} s (median of {args.repeats}; "
        f"all {', '.join(f'{t:.2f}' for t in times)}), {flops / 1e9:.0f} GFLOP conv+mm "
        f"= {flops / seconds / 1e9:.0f} GFLOP/s; matmul {rate / 1e9:.0f} GFLOP/s; "
        f"ratio {flops / seconds / rate:.2f}; heap {args.heap}; per forward {statistics.median(faults):,.0f} "
        f"minor page faults, {statistics.median(system):.2f} s system time"
    )
    if args.breakdown:
        total, parts = part_times(network, x, heap_policy)
        print(f"parts of one more forward ({total:.2f} s):")
        for name, value in parts.items():
            print(f"  {name}: {value:.2f} s ({value / total:.0%})")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), heap_policy(), profile(activities=[ProfilerActivity.CPU]) as prof:
            network(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
