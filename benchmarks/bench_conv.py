"""Speed of the causal depthwise conv1d (`mma.ops.causal_conv1d`) against autograd through the same conv2d.

Inputs as the network passes them: (batch, D, L) channels-last views, kernel width 4, bias, SiLU. For each
dtype it times the forward and forward + backward (gradients of input, weight and bias) of the library's
conv, whose backward is written out, and of `F.conv2d`'s own autograd (oneDNN's depthwise backward on CPU).
Each time is the minimum over `--repeat` calls after one warm-up call.

    python benchmarks/bench_conv.py                          # MMA-T's training shape: 16 x 96 x 2304
    python benchmarks/bench_conv.py --batch 1 --channels 120 --length 65536
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F
from timing import time_calls

from mma.ops import causal_conv1d
from mma.ops.conv import _conv


def _autograd_conv2d(x, weight, bias):
    return F.silu(_conv(x, weight, bias, reverse=False))


def _library_conv(x, weight, bias):
    return causal_conv1d(x, weight, bias, "silu")


def _time(conv, inputs: tuple[torch.Tensor, ...], repeat: int) -> tuple[float, float]:
    """Milliseconds of the forward alone and of forward + backward (gradients of every input)."""
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    upstream = torch.randn_like(conv(*leaves))  # the output's (channels-last) layout, as in training

    def forward() -> None:
        with torch.no_grad():
            conv(*leaves)

    def both() -> None:
        conv(*leaves).backward(upstream)

    return min(time_calls(forward, repeat)) * 1e3, min(time_calls(both, repeat)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--length", type=int, default=2304)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"shape: batch {args.batch}, channels {args.channels}, length {args.length}, width 4; ms, best of "
        f"{args.repeat}"
    )
    print("| dtype | conv | forward | forward + backward |\n|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(args.batch, args.length, args.channels, generator=generator).to(dtype).transpose(1, 2)
        weight = torch.randn(args.channels, 4, generator=generator)
        bias = torch.randn(args.channels, generator=generator)
        for name, conv in (("conv2d autograd", _autograd_conv2d), ("mma.ops.causal_conv1d", _library_conv)):
            fwd, fwd_bwd = _time(conv, (x, weight, bias), args.repeat)
            print(f"| {str(dtype).removeprefix('torch.')} | {name} | {fwd:.1f} | {fwd_bwd:.1f} |")


if __name__ == "__main__":
    main()
