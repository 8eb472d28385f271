"""Whole-network forward speed and peak memory on CPU: MMA-T x2/x4, MMA-B x2, and SwinIR-light for scale.

Each (model, size) runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the number
reported is the peak minus the resident size just before the timed forward (weights and warm-up included
in the baseline). SwinIR-light comes from the `spandrel` package when installed (optional, benchmark only).

    python benchmarks/bench_model.py                      # the full table (several minutes)
    python benchmarks/bench_model.py --sizes 64 --models mma-t-x2 swinir-light-x2
    python benchmarks/bench_model.py --sizes 128 --models mma-t-x2 swinir-light-x2 --dtype bf16

Every model runs the same way: `--dtype` for all, and inside `mma.heap.reuse_freed_memory` as the engine
runs a CPU forward (`--heap system` for malloc's defaults).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from timing import time_calls

MODELS = ("mma-t-x2", "mma-t-x4", "mma-b-x2", "swinir-light-x2")


def swinir_light(scale: int):
    """SwinIR-light as in its paper (embed 60, depths 4x6, window 8), from spandrel's architecture file,
    random weights (also gpu_check.py's).

    spandrel's package __init__ imports torchvision, which this CPU wheel of torch lacks, so the packages
    on the way to the architecture module are stood in by empty namespace modules.
    """
    import importlib
    import importlib.util
    import types
    from pathlib import Path

    found = importlib.util.find_spec("spandrel")
    if found is None:
        raise RuntimeError("spandrel is not installed (pip install spandrel einops)")
    root = Path(found.submodule_search_locations[0])
    for name, path in [
        ("spandrel", root),
        ("spandrel.architectures", root / "architectures"),
        ("spandrel.architectures.SwinIR", root / "architectures" / "SwinIR"),
    ]:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules.setdefault(name, module)
    arch = importlib.import_module("spandrel.architectures.SwinIR.__arch.SwinIR")
    return arch.SwinIR(
        upscale=scale,
        img_size=64,
        window_size=8,
        img_range=1.0,
        depths=[6, 6, 6, 6],
        embed_dim=60,
        num_heads=[6, 6, 6, 6],
        mlp_ratio=2,
        upsampler="pixelshuffledirect",
    )


def _build(name: str):
    family, scale = name.rsplit("-x", 1)
    if family == "swinir-light":
        return swinir_light(int(scale))
    from mma import build_model

    return build_model(family, int(scale))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(name: str, size: int, repeats: int, dtype_name: str = "fp32", heap: str = "reuse") -> dict:
    """Run in the child: warm up on a small input, then time `repeats` forwards of a size x size input."""
    import contextlib

    import torch

    from mma.heap import reuse_freed_memory

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    model = _build(name).eval().to(dtype)
    policy = reuse_freed_memory() if heap == "reuse" else contextlib.nullcontext()
    with torch.inference_mode(), policy:
        model(torch.rand(1, 3, 16, 16, dtype=dtype))  # compile kernels / allocate once
        x = torch.rand(1, 3, size, size, dtype=dtype)
        baseline = _rss_bytes()
        times = time_calls(lambda: model(x), repeats, warmup=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": name,
        "size": size,
        "seconds": min(times),
        "peak_mib": max(peak - baseline, 0) / 2**20,
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--heap", choices=["reuse", "system"], default="reuse")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeats, args.dtype, args.heap)))
        return
    print("| model | params | LR input | forward (s) | peak extra memory (MiB) |")
    print("|---|---|---|---|---|")
    for name in args.models:
        for size in args.sizes:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name, str(size), "--repeats", str(args.repeats)]
                + ["--dtype", args.dtype, "--heap", args.heap],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"| {name} | | {size}x{size} | n/a: {reason} | |", flush=True)
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {name} | {r['params']:,} | {size}x{size} | {r['seconds']:.3f} | {r['peak_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
