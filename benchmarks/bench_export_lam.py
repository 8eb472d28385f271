"""Where `mma export` and `mma lam` spend their time and memory, phase by phase.

Each phase is timed once (they take tens of seconds; a warm-up would double that) with its own peak resident
memory (Linux: the peak is reset through /proc/self/clear_refs before each phase). A float32 matmul rate is
measured beside them, so that runs on machines under different load can be compared by ratio.

    python benchmarks/bench_export_lam.py                       # MMA-T x2: export with --tile 64, LAM at 64
    python benchmarks/bench_export_lam.py --tiles 16 64 --lam-sizes 64 128 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from timing import matmul_gflops

from mma.api import load_model
from mma.export.onnx import check_onnx, export_onnx, onnx_session
from mma.lam import lam


def reset_peak() -> bool:
    """Start a new peak-memory window; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """Peak resident memory of this process since the last reset, in MiB (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(name: str, work: Callable[..., object], *args: object, **kwargs: object) -> object:
    """`work(*args, **kwargs)`, printed as a table row: its seconds and peak memory."""
    reset_peak()
    started = time.perf_counter()
    result = work(*args, **kwargs)
    print(f"| {name} | {time.perf_counter() - started:.1f} | {peak_mib():,.0f} |", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mma-t")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--tiles", type=int, nargs="*", default=[64], help="export --tile values")
    parser.add_argument("--lam-sizes", type=int, nargs="*", default=[64], help="LAM input sizes (square)")
    parser.add_argument("--lam-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, matmul {matmul_gflops():.0f} GFLOP/s (float32, 1024^2)")
    print("| phase | seconds | peak MiB |\n|---|---:|---:|")
    loaded = phase("load weights", load_model, args.model, args.scale, device="cpu", dtype="fp32")
    with tempfile.TemporaryDirectory() as folder:
        for tile in args.tiles:
            for dynamic in (True, False):
                path = Path(folder) / f"t{tile}-{dynamic}.onnx"
                kind = "dynamic (traced at 16 at most)" if dynamic else f"static (traced at {tile})"
                phase(f"export --tile {tile}, {kind}", export_onnx, loaded, path, tile, dynamic=dynamic)
            for optimize in (True, False):
                phase(f"ONNX Runtime session, optimize={optimize}", onnx_session, path, optimize=optimize)
            image = torch.rand(1, 3, tile, tile, generator=torch.Generator().manual_seed(0))
            phase(f"check at {tile}x{tile} (one session + the network)", check_onnx, loaded, path, image)
    network = loaded.network
    with torch.no_grad():  # warm-up: numba's kernels load (or compile) once per process
        network(torch.rand(1, 3, 16, 16))
    lam(network, torch.rand(3, 16, 16), 4, 4, 8, steps=1)
    for size in args.lam_sizes:
        image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            phase(f"one forward {size}x{size}", network, image[None])
        x = y = size * args.scale // 2 - 8
        steps = args.lam_batch  # one batch of path points (after the baseline's forward): 50 steps repeat it
        phase(
            f"LAM, {steps} path steps at {size}x{size}, batch {args.lam_batch}",
            lam,
            network,
            image,
            x,
            y,
            16,
            steps=steps,
            batch_size=args.lam_batch,
        )


if __name__ == "__main__":
    main()
