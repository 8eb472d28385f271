"""`mma.upscale` on a GPU in float32, bfloat16 and float16: the paper's scores and the time per data set.

Why: half precision is what GPU users will pick for speed, and the only question that matters is whether
it costs quality. Each line scores the bundled MMA-T weights (or `--model`) on the given HR folders with the
same protocol as `mma eval` (MATLAB bicubic LR, Y channel, border crop), through the public `upscale` with
automatic tiling, so the CPU scores in docs/benchmarks.md are the reference for the float32 line.

    python benchmarks/gpu_upscale.py ../shared/data/Set5/HR ../shared/data/Set14/HR --scales 2 3 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import mma
from mma.evaluate import evaluate_dataset

DTYPES = ("fp32", "bf16", "fp16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="HR image folders (Set5/HR, Set14/HR, ...)")
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--model", default="mma-t")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device is available to PyTorch: nothing to check here")
        return
    print(
        "| model | dtype | data set | PSNR | SSIM | upscale seconds (all images) |\n|---|---|---|---:|---:|---:|"
    )
    for scale in args.scales:
        for dtype in args.dtypes:

            def upscaler(lr, dtype=dtype, scale=scale):
                return mma.upscale(lr, scale, args.model, device=args.device, dtype=dtype)

            upscaler(np.zeros((32, 32, 3), np.uint8))  # weights loaded and kernels warm before the timing
            for folder in args.folders:
                result = evaluate_dataset(folder, scale, upscaler)
                print(
                    f"| {args.model} x{scale} | {dtype} | {result.name} | {result.psnr:.2f} | {result.ssim:.4f} "
                    f"| {result.seconds:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
