"""Is half precision worth making the CPU default? Set5 PSNR and time at fp32 and at bf16/fp16, one run.

The rule in `mma.runtime.resolve_dtype` turns a CPU half precision on by default only where it is native,
loses under 0.01 dB on Set5 and is faster; this script measures the last two (whole images, as `mma eval`).
A dtype without native kernels on this CPU is still measured here (resolve_dtype is bypassed), marked so.

    python benchmarks/bench_half_cpu.py ../shared/data/Set5 --scale 4 --dtypes fp32 bf16
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
