"""The inference engine's two CPU policies, measured: threads (quiet machine and one core busy) and batched tiles.

Threads: MMA-T x4 (bundled weights) on a 64x64 input, whole image, with all usable CPUs as threads (what
torch does by default, the old behaviour) and with the engine's policy (one thread per idle CPU), first on a
quiet machine, then while a second process keeps one core busy with a Python loop.
Batched tiles: MMA-T x2 on a 192x192 input in 64-pixel tiles (overlap 16, 16 tiles), 1, 2, 4 and 8 tiles per
forward, with the largest difference to one tile at a time.

    python benchmarks/bench_engine.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import numpy as np
import torch
from timing import time_calls

import mma
from mma.engine import Engine
from mma.runtime import default_threads, usable_cpus


def spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """Keep one core busy until told to stop."""
    while not stop.is_set():
        sum(range(10_000))


def best_of(repeats: int, run) -> float:
    return min(time_calls(run, repeats, warmup=0))


def threads_table(repeats: int) -> None:
    model = mma.load_model("mma-t", 4, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    all_cpus = usable_cpus()
    print(f"| machine | threads | chosen | seconds (best of {repeats}) |")
    print("|---|---|---|---|")
    for label in ("quiet", "one core busy"):
        stop = multiprocessing.Event()
        busy = multiprocessing.Process(target=spin, args=(stop,)) if label != "quiet" else None
        if busy is not None:
            busy.start()
            time.sleep(1.0)
        try:
            for policy in ("all CPUs (before)", "engine policy (after)"):
                threads = all_cpus if policy.startswith("all") else None
                engine = Engine(model, device="cpu", tile=None, threads=threads)
                engine.upscale_array(image)  # warm-up: kernels compiled and loaded
                chosen = threads or default_threads()
                seconds = best_of(repeats, lambda engine=engine: engine.upscale_array(image))
                print(f"| {label} | {policy} | {chosen} | {seconds:.3f} |", flush=True)
        finally:
            if busy is not None:
                stop.set()
                busy.join()


def batch_table(repeats: int) -> None:
    model = mma.load_model("mma-t", 2, device="cpu")
    image = np.random.default_rng(1).random((192, 192, 3)).astype(np.float32)
    reference = None
    print(f"\n| tiles per forward | seconds (best of {repeats}) | max abs difference to 1 |")
    print("|---|---|---|")
    for batch in (1, 2, 4, 8):
        engine = Engine(model, device="cpu", tile=64, overlap=16, batch=batch)
        result = engine.upscale_array(image)
        reference = result if reference is None else reference
        seconds = best_of(repeats, lambda engine=engine: engine.upscale_array(image))
        print(f"| {batch} | {seconds:.3f} | {np.abs(result - reference).max():.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("threads", "batch"))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {usable_cpus()} usable CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.only != "batch":
        threads_table(args.repeats)
    if args.only != "threads":
        batch_table(args.repeats)


if __name__ == "__main__":
    main()
