"""Training throughput: iterations/s and patches/s of the real training step (forward, L1, backward, Adam
with the schedule's learning rate, EMA), and the time the data pipeline needs per batch, for MMA-T x2 at
batch 16, LR 64x64. `step_times` also serves sweeps of batch and patch sizes.

Usage: python benchmarks/bench_train.py [--data DIR] [--batch 16] [--patch 64] [--scale 2] [--warmup 1]
       [--steps 3] [--device cpu] [--variant mma-t] [--no-amp] [--heap reuse|system]
On a CPU the steps run inside `mma.heap.reuse_freed_memory`, as `mma train` runs them (`--heap system`: not).
Results go to docs/benchmarks.md with the machine, the load and the scan backend.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import tempfile
import time
from math import inf
from pathlib import Path

import torch
from timing import time_calls

from mma.heap import reuse_freed_memory
from mma.ops import resolve_backend
from mma.train import build_config
from mma.train.data import IterationBatches, PatchDataset, make_loader
from mma.train.distributed import setup
from mma.train.loop import Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "T91"


def bench_trainer(
    data: Path,
    out: str,
    device: str,
    *,
    variant: str = "mma-t",
    scale: int = 2,
    batch: int = 16,
    patch: int = 64,
    amp: bool = True,
) -> Trainer:
    """A fresh training run of the `cpu-small` recipe on `data` in `out` (nothing held out), ready to step."""
    cfg = build_config(
        "cpu-small",
        overrides={
            "train": [str(data)],
            "val_split": 0,
            "variant": variant,
            "scale": scale,
            "batch": batch,
            "patch": patch,
            "device": device,
            "amp": amp,
            "out": out,
        },
    )
    return Trainer(cfg, setup(cfg.device))


def step_times(
    trainer: Trainer, batch: int, patch: int, warmup: int, steps: int, limit_s: float = inf
) -> list[float]:
    """Seconds of each of `steps` training steps of `trainer` on `batch` LR patches of `patch` pixels, after
    `warmup` untimed ones (kernel compilation, autotuning, the allocator). The batches are cut before the
    clock starts, so only the step is timed; `.item()` waits for the device. Steps stop once `limit_s` has
    passed since the first one, so a slow configuration cannot eat a time budget (at least one is timed)."""
    data = PatchDataset(trainer.store, patch, trainer.cfg.seed)
    ready = list(make_loader(data, IterationBatches(0, warmup + steps, batch), workers=0, pin_memory=False))
    pending = iter(ready)
    trainer.model.train()

    def step() -> None:
        trainer.step(*next(pending)).item()

    return time_calls(step, len(ready) - warmup, warmup=warmup, limit_s=limit_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--variant", default="mma-t")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="float32 throughout (default: bf16 autocast where the hardware has it)",
    )
    parser.add_argument("--heap", choices=["reuse", "system"], default="reuse")
    args = parser.parse_args()
    reuse = args.heap == "reuse" and torch.device(args.device).type == "cpu"

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trainer = bench_trainer(
            args.data,
            out,
            args.device,
            variant=args.variant,
            scale=args.scale,
            batch=args.batch,
            patch=args.patch,
            amp=args.amp,
        )
        cfg = trainer.cfg
        prepare = time.perf_counter() - start
        data = PatchDataset(trainer.store, cfg.patch, cfg.seed)
        start = time.perf_counter()
        list(make_loader(data, IterationBatches(0, 64, cfg.batch), workers=0, pin_memory=False))
        data_ms = (time.perf_counter() - start) / 64 * 1000
        with reuse_freed_memory() if reuse else contextlib.nullcontext():
            times = step_times(trainer, cfg.batch, cfg.patch, args.warmup, args.steps)

    seconds = sum(times) / len(times)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"model: {args.variant} x{args.scale}, batch {args.batch}, LR patch {args.patch}, "
        f"scan backend {resolve_backend(None, torch.device(args.device))}, device {args.device}, "
        f"autocast {trainer.amp_dtype or 'off'}, heap {args.heap}"
    )
    print(f"LR preparation of {len(trainer.store)} images: {prepare:.1f} s (incl. model set-up)")
    print(f"data: {data_ms:.1f} ms per batch in the main process")
    print(
        f"step: {seconds:.2f} s/it (min {min(times):.2f}, max {max(times):.2f}, {len(times)} steps after "
        f"{args.warmup} warm-up) -> {1 / seconds:.3f} it/s, {args.batch / seconds:.2f} patches/s"
    )
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
