"""Is half precision worth making the CPU default? Set5 PSNR and time at fp32 and at bf16/fp16, one run.

The rule in `mma.runtime.resolve_dtype` turns a CPU half precision on by default only where it is native,
loses under 0.01 dB on Set5 and is faster; this script measures the last two (whole images, as `mma eval`).
A dtype without native kernels on this CPU is still measured here (resolve_dtype is bypassed), marked so.
On a shared machine the dataset's wall times are noise; `--pairs N` then times N forwards of each dtype
alternately on one `--size` input and reports the median of the per-pair speed ratios.

    python benchmarks/bench_half_cpu.py ../shared/data/Set5 --scale 4 --dtypes fp32 bf16
    python benchmarks/bench_half_cpu.py ../shared/data/Set5 --scale 4 --pairs 7 --size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default="mma-t")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--pairs", type=int, default=0, help="alternate timed forwards instead (see above)")
    parser.add_argument("--size", type=int, default=128, help="input side for --pairs")
    args = parser.parse_args()
    if args.pairs:
        paired_speed(args.model, args.scale, args.dtypes, args.pairs, args.size)
        return

    from mma.engine import Engine
    from mma.evaluate import evaluate_dataset
    from mma.runtime import DTYPES, cpu_has_native

    results = {}
    for name in args.dtypes:
        dtype = DTYPES[name]
        engine = Engine(args.model, scale=args.scale, device="cpu", dtype="fp32", tile=None, batch=1)
        engine.model, engine.dtype = engine.model.to("cpu", dtype), dtype  # measured even where emulated
        start = time.perf_counter()
        result = evaluate_dataset(args.dataset, args.scale, engine.upscale_array)
        seconds = time.perf_counter() - start
        results[name] = (result.summary().psnr, seconds)
        native = "native" if cpu_has_native(dtype) else "not native here"
        print(f"{name} ({native}): PSNR {result.summary().psnr:.4f} dB, {seconds:.1f} s", flush=True)
    if "fp32" in results:
        base_psnr, base_seconds = results["fp32"]
        for name, (value, seconds) in results.items():
            if name != "fp32":
                print(
                    f"{name} vs fp32: {value - base_psnr:+.4f} dB, {base_seconds / seconds:.2f}x the speed "
                    f"({torch.get_num_threads()} threads)"
                )


def paired_speed(model: str, scale: int, names: list[str], pairs: int, size: int) -> None:
    """Forwards of each dtype in turn, `pairs` rounds; ratios within a round share the machine's state."""
    from mma.heap import reuse_freed_memory
    from mma.runtime import DTYPES
    from mma.weights.loaded import load

    loaded = load(model, scale)
    networks = {name: loaded.to("cpu", DTYPES[name]).network for name in names}
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode(), reuse_freed_memory():  # as the engine runs a CPU forward
        for name, network in networks.items():
            network(x.to(DTYPES[name]))  # warm-up
        for _ in range(pairs):
            for name, network in networks.items():
                start = time.perf_counter()
                network(x.to(DTYPES[name]))
                times[name].append(time.perf_counter() - start)
    for name in names:
        ratios = [a / b for a, b in zip(times[names[0]], times[name])]
        print(
            f"{name}: median {statistics.median(times[name]):.3f} s per {size}x{size} forward; "
            f"{names[0]}/{name} time ratio median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}, {pairs} pairs, {torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
