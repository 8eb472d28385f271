"""Tiling benchmark: peak memory of banded stitching at x4, and how close tiled MMA is to a whole-image run.

Part 1 (memory) runs every configuration in a fresh subprocess and reports the growth of its peak
resident memory over the baseline taken just before upscaling (input already decoded). The tile function
is a bicubic x4 resize, so the number isolates what tiling + stitching cost; a network adds its own
per-tile activations on top (about 9 KB per input pixel of a tile for MMA-T x4 on the CPU).

Part 2 (quality) runs MMA-T on a crop of a real image, whole and tiled with several overlaps, and reports
the PSNR (RGB, 8-bit outputs) between the two.

    python benchmarks/bench_tiling.py                 # both parts, small defaults for a CPU
    python benchmarks/bench_tiling.py --sizes 1024 2048 --psnr-size 128 --weights FILE
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def memory_child(size: int, tile: int, overlap: int) -> dict[str, float]:
    """One measurement (runs in its own process so peaks do not mix)."""
    from mma.tiling import run_tiles

    image = torch.rand(3, size, size)
    out = np.empty((4 * size, 4 * size, 3), np.uint8)
    out.fill(0)  # touch the output pages now: the baseline includes the uint8 result itself

    def bicubic(piece: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(piece, scale_factor=4, mode="bicubic", align_corners=False)

    bicubic(torch.rand(1, 3, 8, 8))  # warm the kernels
    baseline = _peak_mib()
    start = time.perf_counter()
    run_tiles(bicubic, image, 4, out, tile=tile, overlap=overlap)
    return {
        "size": size,
        "tile": tile,
        "overlap": overlap,
        "output_mib": out.nbytes / 2**20,
        "float32_output_mib": out.nbytes * 4 / 2**20,
        "peak_growth_mib": _peak_mib() - baseline,
        "seconds": time.perf_counter() - start,
    }


def memory_part(sizes: list[int], tile: int, overlap: int) -> list[dict[str, float]]:
    rows = []
    for size in sizes:
        for chosen in (tile, 0):
            command = [sys.executable, __file__, "--child", str(size), str(chosen), str(overlap)]
            done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            rows.append(json.loads(done.stdout))
    return rows


def test_image(size: int) -> np.ndarray:
    """A centre crop of Set14 baboon (texture everywhere), or noise when the data is absent."""
    path = DATA / "Set14" / "HR" / "baboon.png"
    if not path.exists():
        return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    from PIL import Image

    array = np.asarray(Image.open(path).convert("RGB"))
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return np.ascontiguousarray(array[top : top + size, left : left + size])


def psnr_part(size: int, tile: int, overlaps: list[int], weights: str | None) -> list[dict[str, float]]:
    import mma
    from mma.api import upscale
    from mma.metrics import psnr

    torch.manual_seed(0)
    net = mma.load_model(weights, 4, device="cpu") if weights else mma.build_model("mma-t", 4).eval()
    image = test_image(size)
    start = time.perf_counter()
    whole = upscale(image, 4, net, tile=0, device="cpu")
    rows = [{"tile": 0, "overlap": 0, "psnr_db": float("inf"), "seconds": time.perf_counter() - start}]
    for overlap in overlaps:
        start = time.perf_counter()
        tiled = upscale(image, 4, net, tile=tile, overlap=overlap, device="cpu")
        rows.append(
            {
                "tile": tile,
                "overlap": overlap,
                "psnr_db": psnr(tiled, whole, y_channel=False),
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--psnr-size", type=int, default=128)
    parser.add_argument("--psnr-tile", type=int, default=64)
    parser.add_argument("--psnr-overlaps", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--weights", help="MMA-T x4 weights file (default: random initialisation)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory_child(*args.child)))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\nmemory (x4, uint8 output, bicubic tile function)")
    print(
        f"{'input':>6} {'tile':>5} {'overlap':>7} {'uint8 out MiB':>13} {'float32 out MiB':>15} "
        f"{'peak growth MiB':>15} {'s':>6}"
    )
    for row in memory_part(args.sizes, args.tile, args.overlap):
        print(
            f"{row['size']:>6} {row['tile'] or 'whole':>5} {row['overlap']:>7} {row['output_mib']:>13.0f} "
            f"{row['float32_output_mib']:>15.0f} {row['peak_growth_mib']:>15.0f} {row['seconds']:>6.1f}"
        )
    label = args.weights or "MMA-T x4, random initialisation"
    print(f"\nPSNR tiled vs whole image ({label}, {args.psnr_size}x{args.psnr_size} input)")
    print(f"{'tile':>5} {'overlap':>7} {'PSNR dB':>8} {'s':>6}")
    for row in psnr_part(args.psnr_size, args.psnr_tile, args.psnr_overlaps, args.weights):
        print(
            f"{row['tile'] or 'whole':>5} {row['overlap']:>7} {row['psnr_db']:>8.2f} {row['seconds']:>6.1f}"
        )


if __name__ == "__main__":
    main()
