"""Where the GPU time of MMA-T goes: a kernel profile of the inference forward and of one training step.

Why: on an H200 the chunked scan runs a whole 256x256 image's scan (L = 65,536) in about 1.1 ms, yet MMA-T x2
takes about 44 ms on that input and a training step of 32 patches of 64x64 about 0.27 s. This prints, for
both, the kernels that take the most GPU time (torch.profiler), the share of the selective scan, the GPU's
busy time against the wall time (a step that is mostly launches leaves the GPU idle), and the forward time
with the chunked kernels' other launch shape (CHUNK 32, 4 warps), which the scan sweep found faster.

    python benchmarks/gpu_profile.py            # on a CUDA machine, about a minute
    python benchmarks/gpu_profile.py --quick    # tiny sizes on a CPU (the profile of the CPU ops)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from mma.model import build_model

SCAN_NAMES = ("chunk_", "carry", "scan_forward", "scan_backward")  # the Triton scan kernels


def timed(step, device: torch.device, repeat: int) -> float:
    """Median wall milliseconds of `step()`, synchronised."""
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def report(title: str, step, device: torch.device, repeat: int, rows: int) -> None:
    """Profile `repeat` calls of `step` (after two warm-ups): top kernels, scan share, busy vs wall."""
    for _ in range(2):
        step()
    wall = timed(step, device, repeat)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeat):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    kernels = [
        e
        for e in events
        if getattr(e, attribute, 0) > 0 and (device.type != "cuda" or e.device_type.name == "CUDA")
    ]
    busy = sum(getattr(e, attribute) for e in kernels) / 1e3 / repeat
    scan = sum(getattr(e, attribute) for e in kernels if e.key.startswith(SCAN_NAMES)) / 1e3 / repeat
    launches = sum(e.count for e in kernels) / repeat
    print(f"\n## {title}")
    print(
        f"wall {wall:.1f} ms a call; kernels {busy:.1f} ms ({100 * busy / wall:.0f}% of the wall), "
        f"{launches:.0f} kernel launches a call; selective scan kernels {scan:.1f} ms "
        f"({100 * scan / max(busy, 1e-9):.0f}% of the kernel time)"
    )
    print("| kernel | ms a call | calls a call | share |\n|---|---:|---:|---:|")
    for e in sorted(kernels, key=lambda e: -getattr(e, attribute))[:rows]:
        ms = getattr(e, attribute) / 1e3 / repeat
        print(f"| {e.key[:70]} | {ms:.2f} | {e.count / repeat:.0f} | {100 * ms / max(busy, 1e-9):.0f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run on a CPU")
    parser.add_argument("--rows", type=int, default=15, help="kernels listed per profile")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("no CUDA device: nothing to profile here (--quick runs a CPU dry run)")
        return
    device = torch.device("cuda" if cuda else "cpu")
    size, batch, patch, repeat = (16, 2, 8, 2) if args.quick else (256, 32, 64, 5)
    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU dry run'}, torch {torch.__version__}")
    torch.manual_seed(0)
    model = build_model("mma-t", 2).to(device)
    dtype = torch.bfloat16 if cuda else torch.float32

    model.eval()
    image = torch.rand(1, 3, size, size, device=device)

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=cuda):
            model(image)

    report(f"MMA-T x2 forward, {size}x{size}, {str(dtype)[6:]} autocast", forward, device, repeat, args.rows)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr_patches = torch.rand(batch, 3, patch, patch, device=device)
    hr_patches = torch.rand(batch, 3, 2 * patch, 2 * patch, device=device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=cuda):
            loss = torch.nn.functional.l1_loss(model(lr_patches), hr_patches)
        loss.backward()
        optimizer.step()

    report(
        f"MMA-T x2 training step, batch {batch} of {patch}x{patch}, {str(dtype)[6:]} autocast",
        train_step,
        device,
        repeat,
        args.rows,
    )

    if cuda:
        from mma.ops import _triton_chunked

        model.eval()
        shipped = (_triton_chunked.CHUNK, _triton_chunked.NUM_WARPS)
        print(
            "\n## forward with the chunked kernels' launch shapes\n| CHUNK | NUM_WARPS | forward ms |\n|---:|---:|---:|"
        )
        for chunk, warps in (shipped, (32, 4), (32, 8), (64, 4)):
            _triton_chunked.CHUNK, _triton_chunked.NUM_WARPS = chunk, warps
            forward()
            print(f"| {chunk} | {warps} | {timed(forward, device, repeat):.1f} |", flush=True)
        _triton_chunked.CHUNK, _triton_chunked.NUM_WARPS = shipped


if __name__ == "__main__":
    main()
