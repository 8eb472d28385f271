"""GPU check in one call: scan parity and speed (both Triton kernel families), network, SwinIR, upscale.

Run on a machine with a CUDA GPU; without one it says so and exits 0 (unless `--quick`). Sections, each
printed as lines or markdown tables:
- parity: each scan on CUDA against the float64 reference computed on the CPU, forward and the gradients of
  every input, forward and reverse: `torch` (both orders), `triton-sequential` and `triton-chunked` (the two
  kernel families of the `triton` backend, `mma.ops.scan_triton`), `mamba-ssm` where it runs; float32
  must stay within 1e-5 of the largest reference value (gradients 1e-4); fp16/bf16 errors are reported;
- scan speed: forward without autograd, sequential against chunked kernel, at batch 1 and 16 and L = 512 to
  65,536 (D = 96, N = 16), with the shape rule's choice (`scan_triton.choose_method`) beside each row; then
  forward + backward at training sizes, and a sweep of the chunked kernels' launch shapes;
- with `--all` (the one prepared call, about 8 minutes on an H200): forward time and peak memory of MMA-T
  x2/x4 and MMA-B x2 (random weights) on 256x256 and 512x512 in float32 and bfloat16 with the `triton`
  backend (and the sequential kernel alone on MMA-T x2 256x256, the shape the chunked kernel was made for);
  SwinIR-light (spandrel's architecture, random weights) on the same inputs; `mma.upscale` with the bundled
  MMA-T weights on a synthetic 1920x1080 image at x2 and x4, and with `batch=` where the API takes it.
Every section has a time budget (seconds, scaled by `--budget-scale`): when it is spent, the rest of the
section is skipped with a printed line, so the call ends in time. Exit status 1 when a parity check fails.

    python benchmarks/gpu_check.py                  # the scan sections (about 3 minutes)
    timeout 540 python benchmarks/gpu_check.py --all --repeat 5   # everything, one call
    python benchmarks/gpu_check.py --network-only   # the network table alone
    python benchmarks/gpu_check.py --all --quick    # dry run with tiny sizes; on a CPU the Triton
                                                    # kernels run in the interpreter, the network on `cpu`
    pip install "mma-sr[cuda]"   # mamba-ssm + causal-conv1d, for the mamba-ssm backend
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from timing import Clock, time_calls

from mma.ops import available_backends, causal_conv1d, reference, scan_torch, scan_triton, selective_scan
from mma.ops.testing import scan_inputs

TOLERANCE = 1e-5
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
TRITON_METHODS = ("triton-sequential", "triton-chunked")
# seconds per section on an H200 (scaled by --budget-scale); the sum stays under 8 minutes with compilation
# (the scan sections alone fit in 150 s)
BUDGETS = {
    "parity": 45,
    "half": 10,
    "scan speed": 40,
    "train speed": 20,
    "sweeps": 25,
    "network": 120,
    "swinir": 45,
    "upscale": 100,
}


class Sizes:
    """Problem sizes: the real ones, or tiny ones for a dry run (`--quick`)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.parity = (1, 5, 70) if quick else (2, 64, 1000)
        self.nstate = 4 if quick else 16
        self.half = (1, 5, 64) if quick else (2, 96, 4096)
        self.scan = (
            [(1, 4, 40)]
            if quick
            else [
                (1, 96, 512),
                (1, 96, 4096),
                (1, 96, 65536),
                (16, 96, 4096),
                (16, 96, 65536),
                (256, 96, 1024),
            ]
        )
        self.train = [(1, 4, 40)] if quick else [(16, 96, 48 * 48), (16, 96, 64 * 64)]
        self.sweep_forward = (1, 4, 40) if quick else (1, 96, 65536)
        self.images = [16] if quick else [256, 512]
        # (CHUNK, BLOCK_D, GRAD_BLOCK_D, NUM_WARPS) of the chunked kernels, the shipped shape first; all
        # compile for sm_90 without register spills
        self.chunked_shapes = (
            ((16, 8, 4, 8), (8, 4, 4, 4))
            if quick
            else ((64, 8, 4, 8), (32, 8, 4, 4), (64, 4, 4, 8), (128, 4, 2, 8), (32, 16, 8, 8))
        )
        # (BLOCK_D, NUM_WARPS) of the sequential kernels, the shipped shape among them
        self.sequential_shapes = ((16, 1),) if quick else ((8, 1), (16, 1), (16, 2), (32, 2))
        self.upscale = (36, 64) if quick else (1080, 1920)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    scale = ref.abs().max().item()
    return (out - ref).abs().max().item() / scale if scale else (out - ref).abs().max().item()


def scan_with(name: str) -> Callable[..., torch.Tensor]:
    """The scan of a name: a dispatch backend, "torch-loop" / "torch-chunked" (the torch backend's orders) or
    "triton-sequential" / "triton-chunked" (the triton backend's two kernel families, bypassing its rule)."""
    kind, _, method = name.partition("-")
    if kind == "torch" and method:
        return lambda reverse, **x: scan_torch.selective_scan(
            **x, delta_softplus=True, reverse=reverse, method=method
        )
    if kind == "triton" and method:
        return lambda reverse, **x: scan_triton.selective_scan(
            **x, delta_softplus=True, reverse=reverse, method=method
        )
    return lambda reverse, **x: selective_scan(**x, delta_softplus=True, reverse=reverse, backend=name)


def wall_ms(func: Callable[[], object], repeat: int) -> float:
    """Minimum milliseconds of `repeat` calls after a warm-up call, waiting for the GPU where there is one."""
    return 1e3 * min(
        time_calls(func, repeat, sync=torch.cuda.synchronize if torch.cuda.is_available() else None)
    )


def timed_ms(func: Callable[[], object], repeat: int, digits: int = 2) -> str:
    """`wall_ms` as text, or what went wrong."""
    return guarded(lambda: f"{wall_ms(func, repeat):.{digits}f}")


def guarded(func: Callable[[], str]) -> str:
    """func()'s text, or what went wrong (out of memory, a kernel that fails to compile) in a short line."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001  (report and go on: one failing row must not end the call)
        return describe(exc)


def describe(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return "out of memory"
    first_line = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"failed: {type(exc).__name__}: {first_line}"


# ---------------------------------------------------------------------------------------------- scan checks


def parity_references(sizes: Sizes) -> dict[bool, tuple]:
    """Per direction: the inputs, the upstream weight, and the float64 reference output and gradients."""
    cases = {}
    for reverse in (False, True):
        x = scan_inputs(*sizes.parity, nstate=sizes.nstate)
        ref_in = {k: v.double().requires_grad_(True) for k, v in x.items()}
        ref = reference.selective_scan(**ref_in, delta_softplus=True, reverse=reverse)
        weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref_grads = torch.autograd.grad((ref * weight).sum(), list(ref_in.values()))
        cases[reverse] = x, weight, ref.detach(), ref_grads
    return cases


def check_parity(name: str, device: torch.device, cases: dict[bool, tuple]) -> bool:
    """Forward and all gradients of one scan on `device` against the CPU float64 reference."""
    ok = True
    for reverse, (x, weight, ref, ref_grads) in cases.items():
        dev_in = {k: v.to(device).requires_grad_(True) for k, v in x.items()}
        try:
            out = scan_with(name)(reverse, **dev_in)
            grads = torch.autograd.grad((out.double() * weight.to(device)).sum(), list(dev_in.values()))
        except Exception as exc:  # noqa: BLE001  (a kernel that does not compile is a failed check, not a crash)
            print(f"FAIL parity {name:17s} reverse={reverse!s:5s} {describe(exc)}", flush=True)
            ok = False
            continue
        errors = {"out": rel_err(out, ref)} | {
            f"d{k}": rel_err(g, r) for k, g, r in zip(NAMES, grads, ref_grads)
        }
        worst = max(errors, key=errors.get)
        passed = errors[worst] <= TOLERANCE * (10 if worst != "out" else 1)  # gradients sum longer chains
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'} parity {name:17s} reverse={reverse!s:5s} "
            f"out {errors['out']:.1e}, worst {worst} {errors[worst]:.1e}",
            flush=True,
        )
    return ok


def check_half(name: str, device: torch.device, sizes: Sizes) -> None:
    x = scan_inputs(*sizes.half, nstate=sizes.nstate)
    ref = reference.selective_scan(**x, delta_softplus=True)
    for dtype in (torch.float16, torch.bfloat16):
        half = {k: v.to(device, dtype) for k, v in x.items()}
        text = guarded(lambda h=half: f"rel err {rel_err(scan_with(name)(False, **h), ref):.1e}")
        print(f"info half  {name:17s} {dtype!s:15s} {text}", flush=True)


def check_conv(device: torch.device) -> bool:
    g = torch.Generator().manual_seed(2)
    x, weight, bias = (
        torch.randn(2, 1000, 64, generator=g).transpose(1, 2),
        torch.randn(64, 4),
        torch.randn(64),
    )
    ok = True
    for reverse in (False, True):
        ref = reference.causal_conv1d(x, weight, bias, "silu", reverse=reverse)
        out = causal_conv1d(
            x.to(device), weight.to(device), bias.to(device), "silu", reverse=reverse, backend="mamba-ssm"
        )
        err = rel_err(out, ref)
        ok &= err <= TOLERANCE
        print(
            f"{'PASS' if err <= TOLERANCE else 'FAIL'} parity conv1d (mamba-ssm) reverse={reverse!s:5s} {err:.1e}"
        )
    return ok


def scan_speed(names: list[str], device: torch.device, sizes: Sizes, repeat: int, clock: Clock) -> None:
    print("| scan | batch | D | L | forward ms | rule picks |\n|---|---:|---:|---:|---:|---|")
    for batch, channels, length in sizes.scan:
        if clock.spent(f"scan forward ({batch}, {channels}, {length})"):
            return
        x = {k: v.to(device) for k, v in scan_inputs(batch, channels, length, sizes.nstate).items()}
        for name in names:
            with torch.no_grad():
                ms = timed_ms(lambda n=name, x=x: scan_with(n)(False, **x), repeat, 3)
            print(
                f"| {name} | {batch} | {channels} | {length} | {ms} | "
                f"{scan_triton.choose_method(batch, channels, length)} |",
                flush=True,
            )


def forward_backward(name: str, x: dict[str, torch.Tensor], upstream: torch.Tensor) -> None:
    torch.autograd.grad((scan_with(name)(False, **x) * upstream).sum(), list(x.values()))


def train_scan_speed(names: list[str], device: torch.device, sizes: Sizes, repeat: int, clock: Clock) -> None:
    print("| scan | batch | D | L | forward + backward ms |\n|---|---:|---:|---:|---:|")
    for batch, channels, length in sizes.train:
        if clock.spent(f"forward + backward ({batch}, {channels}, {length})"):
            return
        x = scan_inputs(batch, channels, length, sizes.nstate)
        x = {k: v.to(device).requires_grad_(True) for k, v in x.items()}
        upstream = torch.randn(batch, channels, length, device=device)
        for name in names:
            ms = timed_ms(lambda n=name, x=x, up=upstream: forward_backward(n, x, up), repeat)
            print(f"| {name} | {batch} | {channels} | {length} | {ms} |", flush=True)


def chunked_sweep(device: torch.device, sizes: Sizes, repeat: int, clock: Clock) -> None:
    """Forward at batch 1 and forward + backward at the first training size, per launch shape of the chunked
    kernels; then the sequential kernel's (BLOCK_D, NUM_WARPS) at the training size."""
    from mma.ops import _triton_chunked as chunked

    shipped = tuple(getattr(chunked, k) for k in ("CHUNK", "BLOCK_D", "GRAD_BLOCK_D", "NUM_WARPS"))
    fwd = {k: v.to(device) for k, v in scan_inputs(*sizes.sweep_forward, nstate=sizes.nstate).items()}
    train = {
        k: v.to(device).requires_grad_(True) for k, v in scan_inputs(*sizes.train[0], sizes.nstate).items()
    }
    up = torch.randn(sizes.train[0], device=device)
    chunked_name = "triton-chunked"
    chunked_scan = scan_with(chunked_name)
    print(
        f"| CHUNK | BLOCK_D | GRAD_BLOCK_D | NUM_WARPS | forward ms {sizes.sweep_forward} "
        f"| forward + backward ms {sizes.train[0]} |\n|---:|---:|---:|---:|---:|---:|"
    )
    try:
        for shape in sizes.chunked_shapes:
            if clock.spent(f"chunked shape {shape}"):
                break
            chunked.CHUNK, chunked.BLOCK_D, chunked.GRAD_BLOCK_D, chunked.NUM_WARPS = shape
            with torch.no_grad():
                forward = timed_ms(lambda: chunked_scan(False, **fwd), repeat, 3)
            both = timed_ms(lambda: forward_backward(chunked_name, train, up), repeat)
            print(
                f"| {' | '.join(map(str, shape))} | {forward}{' (shipped)' if shape == shipped else ''} "
                f"| {both} |",
                flush=True,
            )
    finally:
        chunked.CHUNK, chunked.BLOCK_D, chunked.GRAD_BLOCK_D, chunked.NUM_WARPS = shipped
    chosen = scan_triton.BLOCK_D, scan_triton.NUM_WARPS
    print(f"\n| sequential BLOCK_D | NUM_WARPS | forward + backward ms {sizes.train[0]} |\n|---:|---:|---:|")
    try:
        for block, warps in sizes.sequential_shapes:
            if clock.spent(f"sequential shape {(block, warps)}"):
                break
            scan_triton.BLOCK_D, scan_triton.NUM_WARPS = block, warps
            ms = timed_ms(lambda: forward_backward("triton-sequential", train, up), repeat)
            print(
                f"| {block} | {warps} | {ms}{' (shipped)' if (block, warps) == chosen else ''} |", flush=True
            )
    finally:
        scan_triton.BLOCK_D, scan_triton.NUM_WARPS = chosen


# ------------------------------------------------------------------------------------- networks and upscale


@contextlib.contextmanager
def sequential_only() -> Iterator[None]:
    """The triton backend with its sequential kernel only (the shape rule never picks the chunked one)."""
    saved = scan_triton.CHUNKED_MIN_LENGTH
    scan_triton.CHUNKED_MIN_LENGTH = sys.maxsize
    try:
        yield
    finally:
        scan_triton.CHUNKED_MIN_LENGTH = saved


def time_model(model: torch.nn.Module, image: torch.Tensor, dtype: torch.dtype, repeat: int) -> str:
    """'forward ms | peak GiB' of one network on one input (peak memory on CUDA only)."""
    device = image.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype, enabled=dtype != torch.float32):
            model(image)

    ms = timed_ms(run, repeat, 1)
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.type == "cuda" else "-"
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return f"{ms} | {peak}"


def network_speed(
    device: torch.device, backends: list[str | None], sizes: Sizes, repeat: int, clock: Clock
) -> None:
    """Forward time per model, input size, scan backend (None: the automatic choice) and dtype."""
    from mma import build_model

    print("| model | scan | dtype | LR input | forward ms | peak GiB |\n|---|---|---|---|---:|---:|")
    for variant, scale in (("mma-t", 2), ("mma-t", 4), ("mma-b", 2)):
        model = build_model(variant, scale).to(device).eval()
        for size in sizes.images:
            image = torch.rand(1, 3, size, size, device=device)
            for backend in backends:
                for dtype in (torch.float32, torch.bfloat16):
                    if clock.spent(f"{variant} x{scale} {backend or 'auto'} {str(dtype)[6:]} {size}x{size}"):
                        return
                    model.set_scan_backend(backend)
                    print(
                        f"| {variant} x{scale} | {backend or 'auto'} | {str(dtype)[6:]} | {size}x{size} | "
                        f"{time_model(model, image, dtype, repeat)} |",
                        flush=True,
                    )
            if (variant, scale, size) == ("mma-t", 2, sizes.images[0]) and "triton" in backends:
                model.set_scan_backend("triton")
                with sequential_only():
                    print(
                        f"| {variant} x{scale} | triton, sequential kernel only | float32 | {size}x{size} "
                        "| "
                        f"{time_model(model, image, torch.float32, repeat)} |",
                        flush=True,
                    )
        del model


def swinir_speed(device: torch.device, sizes: Sizes, repeat: int, clock: Clock) -> None:
    from bench_model import swinir_light  # the one SwinIR-light definition, beside this script

    try:
        swinir_light(2)
    except Exception as exc:  # noqa: BLE001  (spandrel missing, or a version whose class moved)
        print(f"skipped SwinIR-light: spandrel's SwinIR is not usable here ({type(exc).__name__}: {exc})")
        return
    print("| model | dtype | LR input | forward ms | peak GiB |\n|---|---|---|---:|---:|")
    for scale in (2, 4):
        model = swinir_light(scale).to(device).eval()
        for size in sizes.images:
            image = torch.rand(1, 3, size, size, device=device)
            for dtype in (torch.float32, torch.bfloat16):
                if clock.spent(f"SwinIR-light x{scale} {str(dtype)[6:]} {size}x{size}"):
                    return
                print(
                    f"| SwinIR-light x{scale} | {str(dtype)[6:]} | {size}x{size} | "
                    f"{time_model(model, image, dtype, repeat)} |",
                    flush=True,
                )


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A smooth colour ramp with some noise and edges: (height, width, 3) uint8, the same every run."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    planes = [np.sin(x / 37.0 + c) * np.cos(y / 23.0 - c) for c in range(3)]
    image = 0.5 + 0.35 * np.stack(planes, -1) + 0.05 * rng.standard_normal((height, width, 3))
    image[(x.astype(int) // 64 + y.astype(int) // 64) % 2 == 0] *= 0.8
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def upscale_speed(device: torch.device, sizes: Sizes, clock: Clock, model: str = "mma-t") -> None:
    """Wall time of mma.upscale (automatic tiling and dtype): first call and a warm one. `model` is what
    `mma.upscale` takes (the bundled MMA-T by default), with `{scale}` replaced by the scale."""
    import mma

    image = synthetic_image(*sizes.upscale)
    print("| call | scale | input | first call s | warm call s |\n|---|---:|---|---:|---:|")
    for scale in (4, 2):  # x4 first: the target is x4, and the section may run out of time
        for label, options in (("mma.upscale", {}), ("mma.upscale batch=4", {"batch": 4})):
            if clock.spent(f"{label} x{scale}"):
                return
            try:
                seconds = []
                for _ in range(2):
                    start = time.perf_counter()
                    mma.upscale(image, scale, model.format(scale=scale), device=device, **options)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    seconds.append(time.perf_counter() - start)
                text = f"{seconds[0]:.2f} | {seconds[1]:.2f}"
            except TypeError as exc:
                if "batch" not in str(exc):
                    raise
                text = "- | - (mma.upscale takes no batch argument here)"
            except Exception as exc:  # noqa: BLE001
                text = describe(exc) + " | -"
            print(f"| {label} | {scale} | {image.shape[1]}x{image.shape[0]} | {text} |", flush=True)


# -------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--all", action="store_true", help="the scan sections, then network, SwinIR-light and mma.upscale"
    )
    parser.add_argument(
        "--network", action="store_true", help="also time the whole network (mma.build_model)"
    )
    parser.add_argument("--network-only", action="store_true", help="time the network, skip the scan checks")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case (minimum reported)")
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every section's time budget"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes; runs on a CPU (a dry run of the script)"
    )
    parser.add_argument(
        "--upscale-model",
        default="mma-t",
        help="weights for the mma.upscale timings, {scale} replaced (e.g. a run's "
        "weights/training/mma-t-x{scale}/ema.safetensors where the bundled files did not travel)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        help="scans to check (default: torch-loop, torch-chunked, "
        "triton-sequential, triton-chunked, and mamba-ssm where it runs)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.quick:
        print("no CUDA device is available to PyTorch: nothing to check here (--quick runs a CPU dry run)")
        return 0
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        device = torch.device("cpu")
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are imported
        print(f"device: CPU dry run (Triton kernels in the interpreter), torch {torch.__version__}")
    sizes = Sizes(args.quick)
    repeat = 1 if args.quick else args.repeat
    clock = Clock(BUDGETS, args.budget_scale * (10 if args.quick and device.type == "cpu" else 1))
    reasons = available_backends()
    print("backends: " + ", ".join(f"{k}: {'usable' if v is None else v}" for k, v in reasons.items()))
    triton_ok = reasons["triton"] is None or (device.type == "cpu" and _triton_imports())
    if args.quick and device.type == "cpu" and triton_ok:
        from mma.ops import _triton_chunked

        _triton_chunked.CHUNK = 16  # several chunks in a short sequence; the interpreter is slow
    names = args.backends or [
        "torch-loop",
        "torch-chunked",
        *(TRITON_METHODS if triton_ok else ()),
        *(["mamba-ssm"] if reasons["mamba-ssm"] is None else []),
    ]
    timed = [name for name in names if not name.startswith("torch-")] or names  # torch's are known and slow
    ok = True
    if not args.network_only:
        with clock.section_of("parity"):
            cases = parity_references(sizes)
            ok = all([check_parity(name, device, cases) for name in names])  # noqa: C419  (run every check)
            if "mamba-ssm" in names:
                ok &= check_conv(device)
        with clock.section_of("half"):
            for name in timed:
                if not clock.spent(f"half precision of {name}"):
                    check_half(name, device, sizes)
        with clock.section_of("scan speed"):
            scan_speed(timed, device, sizes, repeat, clock)
        with clock.section_of("train speed"):
            train_scan_speed(timed, device, sizes, repeat, clock)
        if triton_ok:
            with clock.section_of("sweeps"):
                chunked_sweep(device, sizes, repeat, clock)
    if args.all or args.network or args.network_only:
        gpu = [name for name in ("mamba-ssm", "triton") if reasons[name] is None]
        with clock.section_of("network"):
            network_speed(device, gpu or [None], sizes, max(1, repeat // 2), clock)
    if args.all:
        with clock.section_of("swinir"):
            swinir_speed(device, sizes, max(1, repeat // 2), clock)
        with clock.section_of("upscale"):
            upscale_speed(device, sizes, clock, args.upscale_model)
    print("\nall parity checks passed" if ok else "\nSOME PARITY CHECKS FAILED")
    return 0 if ok else 1


def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
