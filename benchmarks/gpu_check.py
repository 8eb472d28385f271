"""GPU check of the scan backends (and optionally the network): parity, half-precision error, speed.

Run on a machine with a CUDA GPU; without one it says so and exits 0. Checks, each printed as one line:
- `torch` backend on CUDA (both evaluation orders) against the float64 reference computed on the CPU:
  forward and the gradients of every input, forward and reverse; float32 must stay within 1e-5 (relative to
  the largest reference value);
- fp16 / bf16 inputs through the `torch` backend (and `cuda` where it runs): error reported, not judged;
- `cuda` backend (mamba-ssm selective_scan_fn, causal-conv1d) and `triton` backend (our Triton kernels)
  against the reference, where they run;
- forward time of the scan per backend at the network's sizes, and forward + backward time at the
  training sizes (batch 16, 48x48 and 64x64 patches), and for `triton` a few block/warp choices;
- with `--network`: forward time and peak memory of MMA-T x2/x4 and MMA-B x2 on 256x256 and 512x512 inputs
  (`--network-only` skips the scan checks).
Exit status 1 when a parity check fails.

    python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --network --repeat 20
    pip install "mma-sr[cuda]"   # mamba-ssm + causal-conv1d, for the cuda backend
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from mma.ops import available_backends, causal_conv1d, reference, scan_torch, selective_scan

TOLERANCE = 1e-5
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch: int, channels: int, length: int, nstate: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random CPU float32 inputs in the network's layout (channels-last buffers seen as (batch, D, L))."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, 3 * channels, generator=g)
    bc = torch.randn(batch, length, 2 * nstate, generator=g)
    return {
        "u": tokens[..., :channels].transpose(1, 2),
        "delta": tokens[..., channels : 2 * channels].transpose(1, 2),
        "A": -torch.exp(torch.randn(channels, nstate, generator=g)),
        "B": bc[..., :nstate].transpose(1, 2),
        "C": bc[..., nstate:].transpose(1, 2),
        "D": torch.randn(channels, generator=g),
        "z": tokens[..., 2 * channels :].transpose(1, 2),
        "delta_bias": torch.randn(channels, generator=g) * 0.5,
    }


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).abs().max() / ref.abs().max()).item()


def scan_with(name: str) -> Callable[..., torch.Tensor]:
    """The scan of a backend name; "torch-loop" / "torch-chunked" force the torch backend's order."""
    if name.startswith("torch-"):
        method = name.split("-", 1)[1]
        return lambda reverse, **x: scan_torch.selective_scan(**x, delta_softplus=True, reverse=reverse, method=method)
    return lambda reverse, **x: selective_scan(**x, delta_softplus=True, reverse=reverse, backend=name)


def check_parity(name: str, device: torch.device) -> bool:
    """Forward and all gradients of one backend on `device` against the CPU float64 reference."""
    ok = True
    for reverse in (False, True):
        x = make_inputs(2, 64, 1000)
        ref_in = {k: v.double().requires_grad_(True) for k, v in x.items()}
        ref = reference.selective_scan(**ref_in, delta_softplus=True, reverse=reverse)
        weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref_grads = torch.autograd.grad((ref * weight).sum(), list(ref_in.values()))
        dev_in = {k: v.to(device).requires_grad_(True) for k, v in x.items()}
        out = scan_with(name)(reverse, **dev_in)
        grads = torch.autograd.grad((out.double() * weight.to(device)).sum(), list(dev_in.values()))
        errors = {"out": rel_err(out, ref)} | {f"d{k}": rel_err(g, r) for k, g, r in zip(NAMES, grads, ref_grads)}
        worst = max(errors, key=errors.get)
        passed = errors[worst] <= TOLERANCE * (10 if worst != "out" else 1)  # gradients sum longer chains
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} parity {name:14s} reverse={reverse!s:5s} "
              f"out {errors['out']:.1e}, worst {worst} {errors[worst]:.1e}", flush=True)
    return ok


def check_half(name: str, device: torch.device) -> None:
    x = make_inputs(2, 96, 4096)
    ref = reference.selective_scan(**x, delta_softplus=True)
    for dtype in (torch.float16, torch.bfloat16):
        try:
            out = scan_with(name)(False, **{k: v.to(device, dtype) for k, v in x.items()})
            print(f"info half  {name:14s} {dtype!s:15s} rel err {rel_err(out, ref):.1e}", flush=True)
        except Exception as exc:  # noqa: BLE001  (a backend may not support a dtype: report, go on)
            print(f"info half  {name:14s} {dtype!s:15s} not supported: {exc}", flush=True)


def check_conv(device: torch.device) -> bool:
    g = torch.Generator().manual_seed(2)
    x, weight, bias = torch.randn(2, 1000, 64, generator=g).transpose(1, 2), torch.randn(64, 4), torch.randn(64)
    ok = True
    for reverse in (False, True):
        ref = reference.causal_conv1d(x, weight, bias, "silu", reverse=reverse)
        out = causal_conv1d(x.to(device), weight.to(device), bias.to(device), "silu", reverse=reverse,
                            backend="cuda")
        err = rel_err(out, ref)
        ok &= err <= TOLERANCE
        print(f"{'PASS' if err <= TOLERANCE else 'FAIL'} parity conv1d (cuda)    reverse={reverse!s:5s} {err:.1e}")
    return ok


def gpu_ms(func: Callable[[], object], repeat: int) -> float:
    func()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def scan_speed(names: list[str], device: torch.device, repeat: int) -> None:
    print("\n| backend | batch | D | L | forward ms |\n|---|---:|---:|---:|---:|")
    for batch, channels, length in ((1, 96, 4096), (1, 96, 65536), (16, 96, 4096), (1, 384, 16384), (1, 384, 65536)):
        x = {k: v.to(device) for k, v in make_inputs(batch, channels, length).items()}
        for name in names:
            with torch.no_grad():
                try:
                    ms = f"{gpu_ms(lambda n=name, x=x: scan_with(n)(False, **x), repeat):.2f}"
                except torch.cuda.OutOfMemoryError:
                    ms = "out of memory"
                    torch.cuda.empty_cache()
            print(f"| {name} | {batch} | {channels} | {length} | {ms} |", flush=True)


def forward_backward(name: str, x: dict[str, torch.Tensor], upstream: torch.Tensor) -> None:
    torch.autograd.grad((scan_with(name)(False, **x) * upstream).sum(), list(x.values()))


def train_scan_speed(names: list[str], device: torch.device, repeat: int) -> None:
    print("\n| backend | batch | D | L | forward + backward ms |\n|---|---:|---:|---:|---:|")
    for batch, channels, length in ((16, 96, 48 * 48), (16, 96, 64 * 64)):
        x = {k: v.to(device).requires_grad_(True) for k, v in make_inputs(batch, channels, length).items()}
        upstream = torch.randn(batch, channels, length, device=device)
        for name in names:
            ms = gpu_ms(lambda n=name, x=x, up=upstream: forward_backward(n, x, up), repeat)
            print(f"| {name} | {batch} | {channels} | {length} | {ms:.2f} |", flush=True)


def triton_sweep(device: torch.device, repeat: int) -> None:
    """Forward + backward of a training batch for a few (channels per program, warps) choices of `triton`."""
    from mma.ops import scan_triton

    chosen = scan_triton.BLOCK_D, scan_triton.NUM_WARPS
    x = {k: v.to(device).requires_grad_(True) for k, v in make_inputs(16, 96, 48 * 48).items()}
    upstream = torch.randn(16, 96, 48 * 48, device=device)
    print("\n| triton BLOCK_D | NUM_WARPS | forward + backward ms, (16, 96, 2304) |\n|---:|---:|---:|")
    try:
        for block, warps in ((8, 1), (16, 1), (16, 2), (32, 1), (32, 2), (64, 2)):
            scan_triton.BLOCK_D, scan_triton.NUM_WARPS = block, warps
            ms = gpu_ms(lambda: forward_backward("triton", x, upstream), repeat)
            print(f"| {block} | {warps} | {ms:.2f}{' (default)' if (block, warps) == chosen else ''} |", flush=True)
    finally:
        scan_triton.BLOCK_D, scan_triton.NUM_WARPS = chosen


def network_speed(device: torch.device, backends: list[str], repeat: int) -> None:
    try:
        from mma import build_model
    except ImportError as exc:
        print(f"--network: mma.build_model is not available ({exc})")
        return
    print("\n| model | backend | dtype | LR input | forward ms | peak GiB |\n|---|---|---|---|---:|---:|")
    for variant, scale in (("mma-t", 2), ("mma-t", 4), ("mma-b", 2)):
        model = build_model(variant, scale).to(device).eval()
        for size in (256, 512):
            image = torch.rand(1, 3, size, size, device=device)
            for backend in backends:
                for dtype in (torch.float32, torch.bfloat16):
                    model.set_scan_backend(backend)
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        with torch.no_grad(), torch.autocast("cuda", dtype, enabled=dtype != torch.float32):
                            ms = f"{gpu_ms(lambda m=model, i=image: m(i), repeat):.1f}"
                    except torch.cuda.OutOfMemoryError:
                        ms = "out of memory"
                    peak = torch.cuda.max_memory_allocated() / 2**30
                    torch.cuda.empty_cache()
                    print(f"| {variant} x{scale} | {backend} | {str(dtype)[6:]} | {size}x{size} | {ms} | {peak:.2f} |",
                          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", action="store_true", help="also time the whole network (mma.build_model)")
    parser.add_argument("--network-only", action="store_true", help="time the network, skip the scan checks")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case (minimum reported)")
    parser.add_argument("--backends", nargs="+", help="scan backends to check (default: torch-loop, "
                        "torch-chunked and every usable GPU backend)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device is available to PyTorch: nothing to check here")
        return 0
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    reasons = available_backends()
    print("backends: " + ", ".join(f"{k}: {'usable' if v is None else v}" for k, v in reasons.items()))
    gpu_backends = [name for name in ("cuda", "triton") if reasons[name] is None]
    names = args.backends or ["torch-loop", "torch-chunked", *gpu_backends]
    fast = [name for name in names if name != "torch-loop"]  # the loop order launches kernels per token
    ok = True
    if not args.network_only:
        ok = all([check_parity(name, device) for name in names])  # noqa: C419  (run every check)
        if "cuda" in names:
            ok &= check_conv(device)
        for name in fast:
            check_half(name, device)
        scan_speed(fast, device, args.repeat)
        train_scan_speed(fast, device, args.repeat)
        if "triton" in names:
            triton_sweep(device, args.repeat)
    if args.network or args.network_only:
        network_speed(device, ["torch", *gpu_backends], args.repeat)
    print("\nall parity checks passed" if ok else "\nSOME PARITY CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
