"""One GPU job that trains: measure the training step, pick a batch, continue the runs, branch each one.

Why one prepared script: the project's GPU machine comes 15 minutes at a time (one job of at most 10
minutes, 64 MiB carried, 8 files of 16 MiB back), so every stage is sized from what the job itself
measures and guarded by the clock (`--budget` seconds from the start, 550 by default):

1. data: the lossless-WebP images carried in `.devdata` are written back to `../shared/data`
   (benchmarks/pack_data.py), where the runs' configurations look for them;
2. sweep: the real training step (benchmarks/bench_train.py on mma.train.loop.Trainer: forward, L1,
   backward, Adam, EMA; the default scan backend, `triton` on CUDA without mamba-ssm; bf16 autocast) of
   MMA-T x2 at batch 16/32/64/128 and LR patch 48/64, a few steps each, within `--sweep-budget` seconds;
3. pick (`pick`, the rule below): a batch, a patch and a learning rate;
4. train: each run gets an equal share of the time left, or with `--parallel` all runs train side by side,
   each over all of it (one training process of this small network leaves most of an H200 idle). It
   continues as a main run with the chosen batch, patch and a constant rate (`mma train --resume --out RUN
   --schedule constant --lr LR --batch B --patch P`), stopped by the clock (`timeout --foreground`: SIGTERM
   makes the trainer finish its step and save), then a decay branch of it (`--decay-branch --decay-iters
   K`, K 20% of the run's iterations at most and at least MIN_BRANCH, fewer when the main run's own
   measured step says the time left holds fewer), made in a staging folder so the run folder holds the
   main run only;
5. back to $OUT: per run `<run>.state.ckpt` (13-15 MB) and `<run>.tar` (the main run's EMA weights,
   config and logs; the branch's under `branch/`, ready for `weights/bundle.py`), plus `gpu_train.json`
   (sweep, choice, summary) and `gpu_train.log`: 2 n + 2 files, so at most three runs;
6. one summary table: iterations, s/step, held-out PSNR of each main run and branch.

The rule (a heuristic, not a measurement of quality): among the configurations with batch <= 64 that ran,
take the one with the most LR pixels per second, counted in 64x64 patches (a 48x48 patch is 0.5625 of
one), and among those within 5% of it the smallest batch (more optimiser steps for the same pixels);
the learning rate scales linearly with the batch from 2.5e-4 at batch 16 (the CPU main runs' rate), capped
at 5e-4. The paper trained at batch 64 with 2e-4; above 64 a larger batch buys speed rather than quality per
pixel, so it is measured but not chosen. Target: at least 1,500 LR patches of 64x64 per second on an H200.
A patch of 64 leaves out more training images at x3 and x4 (their LR side is below 64) than 48 does: see
docs/training.md. `--batch`/`--patch` skip the sweep once its numbers are known.

    python benchmarks/gpu_train.py --parallel weights/training/mma-t-x{2,3,4}   # on the GPU machine
    python benchmarks/gpu_train.py --rehearse weights/training/mma-t-x2 ...  # here: copies, tiny sizes
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mma.train.loop import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, pack_data: scripts beside this one

BATCHES, PATCHES = (16, 32, 64, 128), (48, 64)
MAX_BATCH = 64  # the largest batch the rule may choose
BASE_LR, BASE_BATCH, MAX_LR = 2.5e-4, 16, 5e-4
NEAR_BEST = 0.95  # within 5% of the best pixel rate counts as a tie: the smaller batch wins
TARGET = 1500  # LR patches of 64x64 per second on an H200
MIN_BRANCH, BRANCH_FRACTION = 300, 0.2  # decay branch length: at least, and at most this share of the run
BRANCH_SHARE = 0.35  # of each run's time slice, for its branch
SLACK = 1.1  # on the measured step when sizing a process to a time
RESERVE = 20.0  # seconds kept at the end for copying the results
BACK_LIMIT = 16 * 2**20  # bytes per file brought back
PROGRESS_BARS = ("training:", "preparing LR images:")


@dataclass(frozen=True)
class Measured:
    """One configuration of the sweep: seconds per step, or None when it did not run (`note` says why)."""

    batch: int
    patch: int
    seconds: float | None
    note: str = ""

    @property
    def patches_per_s(self) -> float:
        return self.batch / self.seconds if self.seconds else 0.0

    @property
    def equivalent_per_s(self) -> float:
        """LR pixels per second, in 64x64 patches."""
        return self.patches_per_s * (self.patch / 64) ** 2


@dataclass(frozen=True)
class Choice:
    batch: int
    patch: int
    lr: float


def scaled_lr(batch: int) -> float:
    """Linear in the batch from BASE_LR at BASE_BATCH, capped at MAX_LR."""
    return min(MAX_LR, BASE_LR * batch / BASE_BATCH)


def pick(measured: Sequence[Measured], max_batch: int = MAX_BATCH) -> Choice:
    """The rule of the module docstring: the most pixels per second with batch <= `max_batch`, ties (within
    5%) to the smaller batch, then the larger patch."""
    ran = [m for m in measured if m.seconds is not None and m.batch <= max_batch]
    if not ran:
        raise ValueError(f"no configuration with batch <= {max_batch} ran")
    best = max(m.equivalent_per_s for m in ran)
    chosen = min(
        (m for m in ran if m.equivalent_per_s >= NEAR_BEST * best), key=lambda m: (m.batch, -m.patch)
    )
    return Choice(chosen.batch, chosen.patch, scaled_lr(chosen.batch))


def branch_length(iteration: int, seconds_left: float, step_s: float, overhead_s: float, minimum: int) -> int:
    """Steps of a decay branch from `iteration`: BRANCH_FRACTION of the run at most, `minimum` at least, and
    fewer only when `seconds_left` (less a process's `overhead_s`) holds fewer steps of `step_s`."""
    fits = int((seconds_left - overhead_s) / (step_s * SLACK))
    wanted = max(minimum, int(BRANCH_FRACTION * iteration))
    return max(1, min(wanted, fits))


# ----- the stages ------------------------------------------------------------------------------------------


class Clock:
    """Seconds left of the job's budget, and a log that also goes to $OUT."""

    def __init__(self, budget: float, log: Path) -> None:
        self.end = time.monotonic() + budget
        self.log = log.open("a", encoding="utf-8")
        self.lock = threading.Lock()  # runs side by side report from their own threads

    def left(self) -> float:
        return self.end - time.monotonic()

    def say(self, text: str = "") -> None:
        with self.lock:
            print(text, flush=True)
            self.log.write(text + "\n")
            self.log.flush()


def time_one(trainer: Trainer, batch: int, patch: int, warmup: int, steps: int, limit_s: float) -> Measured:
    """One configuration of the sweep; a failure (out of memory, a kernel refusing a size) is a result."""
    import torch
    from bench_train import step_times

    try:
        times = step_times(trainer, batch, patch, warmup, steps, limit_s)
    except torch.OutOfMemoryError:
        return Measured(batch, patch, None, "out of memory")
    except RuntimeError as exc:
        return Measured(batch, patch, None, f"failed: {str(exc).splitlines()[0][:80]}")
    return Measured(batch, patch, median(times), f"{len(times)} steps")


def sweep(
    data: Path,
    device: str,
    configs: Sequence[tuple[int, int]],
    warmup: int,
    steps: int,
    budget: float,
    say: Callable[[str], None],
) -> list[Measured]:
    """Time the real training step of each (batch, patch), largest patch cut from one set of LR images."""
    import torch
    from bench_train import bench_trainer

    from mma.ops import resolve_backend

    end = time.monotonic() + budget
    results: list[Measured] = []
    with tempfile.TemporaryDirectory() as out:
        trainer = bench_trainer(data, out, device, patch=max(p for _, p in configs))
        say(
            f"sweep: MMA-T x2 on {data} ({len(trainer.store)} images), device {trainer.device}, scan backend "
            f"{resolve_backend(None, trainer.device)}, autocast {trainer.amp_dtype or 'off'}"
        )
        for batch, patch in configs:
            left = end - time.monotonic()
            m = (
                time_one(trainer, batch, patch, warmup, steps, min(left, budget / 4))
                if left > 0
                else Measured(batch, patch, None, "no time left")
            )
            results.append(m)
            say(
                f"  batch {batch:3d}, patch {patch}: "
                + (
                    f"{m.seconds:.4f} s/step, {m.patches_per_s:8.1f} patches/s, "
                    f"{m.equivalent_per_s:8.1f} 64x64-equivalent/s ({m.note})"
                    if m.seconds
                    else m.note
                )
            )
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        del trainer
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return results


def iteration_of(run: Path) -> int:
    import torch

    return int(torch.load(run / "state.ckpt", map_location="cpu", weights_only=True)["iteration"])


def step_seconds(run: Path, after: int) -> float | None:
    """Median seconds per step of the train_log rows past iteration `after` (None: no row)."""
    with (run / "train_log.csv").open(newline="") as handle:
        rates = [float(r["iters_per_s"]) for r in csv.DictReader(handle) if int(r["iteration"]) > after]
    return 1 / median(rates) if rates else None


def held_out(run: Path, at: int | None = None) -> str:
    """The PSNR of the first validation set at iteration `at` (default: the latest row), or '-'."""
    path = run / "val_log.csv"
    rows = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
    rows = [r for r in rows if at is None or int(r["iteration"]) == at]
    return f"{float(rows[-1]['psnr']):.4f}" if rows else "-"


def train_process(args: list[str], limit: float, log: Path, env: dict[str, str]) -> tuple[int, float]:
    """`python -m mma train ARGS` under `timeout --foreground` (SIGTERM: the trainer saves, then exits);
    returns the exit status and the wall time. Progress bars are left out of the log."""
    command = ["timeout", "--foreground", "-k", "30", f"{max(1, int(limit))}", sys.executable, "-m", "mma"]
    start = time.monotonic()
    done = subprocess.run([*command, "train", *args], capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    lines = (done.stdout + done.stderr).replace("\r", "\n").splitlines()
    log.write_text("\n".join(x for x in lines if x.strip() and not x.startswith(PROGRESS_BARS)) + "\n")
    return done.returncode, wall


@dataclass
class RunReport:
    run: str
    start: int
    main_end: int = 0
    branch_end: int = 0
    branch_finished: bool = False
    step_s: float | None = None
    psnr_start: str = "-"
    psnr_main: str = "-"
    psnr_branch: str = "-"


def train_runs(
    runs: list[Path],
    choice: Choice,
    step_s: float,
    clock: Clock,
    opts: argparse.Namespace,
    staging: Path,
    extra: list[str],
) -> list[RunReport]:
    """Each run: a main run with `choice`, then a decay branch. One after another, each in an equal share
    of the time left; or, with `opts.parallel`, all at once, each over all of it (a training process of
    this small network leaves most of an H200 idle, so runs side by side add up)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    if not opts.parallel:
        reports = []
        for index, run in enumerate(runs):
            share = (clock.left() - RESERVE) / (len(runs) - index)
            reports.append(train_one(run, choice, step_s, share, clock, opts, staging, extra, env))
        return reports
    share = clock.left() - RESERVE
    # side by side, a step takes longer than the sweep measured alone: at worst the GPU is split evenly
    shared_step = step_s * len(runs)
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [
            pool.submit(train_one, run, choice, shared_step, share, clock, opts, staging, extra, env)
            for run in runs
        ]
        return [future.result() for future in futures]


def train_one(
    run: Path,
    choice: Choice,
    step_s: float,
    share: float,
    clock: Clock,
    opts: argparse.Namespace,
    staging: Path,
    extra: list[str],
    env: dict[str, str],
) -> RunReport:
    """One run within `share` seconds: its main run, stopped by the clock (SIGTERM: the trainer saves),
    then a decay branch sized from the main run's own measured step, made in a staging folder so the run
    folder holds the main run only. `step_s` is the expected step, for the plan only."""
    machine = ["--device", opts.device, *extra]
    recipe = [
        "--schedule",
        "constant",
        "--lr",
        f"{choice.lr:g}",
        "--batch",
        str(choice.batch),
        "--patch",
        str(choice.patch),
    ]  # the branch too, should there be no main run before it
    overhead = opts.overhead
    share_end = time.monotonic() + share
    report = RunReport(run.name, iteration_of(run))
    report.psnr_start = held_out(run)
    branch_steps = branch_length(report.start, BRANCH_SHARE * share, step_s, overhead, opts.min_branch)
    main_time = share - (overhead + branch_steps * step_s * SLACK)
    clock.say(
        f"== {run.name}: {share:.0f} s from iteration {report.start}: a main run of about {main_time:.0f} s, "
        f"then a branch of about {branch_steps} steps"
    )
    report.main_end = report.start
    if main_time > overhead:
        status, wall = train_process(
            [
                "--resume",
                "--out",
                str(run),
                *recipe,
                "--iters",
                str(report.start + opts.max_steps),
                *machine,
            ],
            main_time,
            staging / f"{run.name}.main.log",
            env,
        )
        report.main_end = iteration_of(run)
        report.step_s = step_seconds(run, report.start)
        done = report.main_end - report.start
        if report.step_s and done:
            overhead = max(5.0, wall - done * report.step_s)
        report.psnr_main = held_out(run, report.main_end)
        clock.say(
            f"   {run.name} main run: exit {status}, {report.start} -> {report.main_end} in {wall:.0f} s "
            f"({report.step_s or float('nan'):.4f} s/step; {overhead:.0f} s outside the steps)"
        )
    branch = staging / "branches" / run.name
    branch_steps = min(
        opts.max_steps,
        branch_length(
            report.main_end,
            share_end - time.monotonic(),
            report.step_s or step_s,
            overhead,
            opts.min_branch,
        ),
    )
    status, wall = train_process(
        [
            "--resume",
            "--out",
            str(run),
            "--decay-branch",
            str(branch),
            "--decay-iters",
            str(branch_steps),
            *recipe,
            *machine,
        ],
        max(10.0, min(share_end - time.monotonic() + 30, clock.left() - RESERVE)),
        staging / f"{run.name}.branch.log",
        env,
    )
    if (branch / "state.ckpt").is_file():
        report.branch_end = iteration_of(branch)
        report.branch_finished = report.branch_end == report.main_end + branch_steps
        report.psnr_branch = held_out(branch, report.branch_end) if report.branch_finished else "-"
    clock.say(
        f"   {run.name} branch of {branch_steps}: exit {status}, to {report.branch_end} in {wall:.0f} s"
        + ("" if report.branch_finished else " (NOT finished: not a release)")
    )
    return report


def rehearsal_data(
    data: Path, staging: Path, pack: Callable[..., None], unpack: Callable[..., None]
) -> tuple[Path, list[str]]:
    """The data stage at rehearsal size: twelve T91 images large enough for x4, packed and unpacked into
    `staging` as on the GPU machine; returns the folder the runs then read and the `mma train` options that
    point the run copies there (two images held out instead of ten, a cache of their own)."""
    from PIL import Image

    source = staging / "source" / "T91" / "HR"
    source.mkdir(parents=True)
    large = [p for p in sorted((data / "T91" / "HR").iterdir()) if min(Image.open(p).size) >= 4 * 32]
    for path in large[:12]:
        shutil.copyfile(path, source / path.name)
    pack(staging / "source", staging / "packed", ["T91/HR"])
    unpack(staging / "packed", staging / "data")
    options = ["--data", str(staging / "data" / "T91" / "HR"), "--val-split", "2"]
    return staging / "data", [*options, "--cache-dir", str(staging / "cache")]


def bring_back(runs: list[Path], staging: Path, out: Path, say: Callable[[str], None]) -> None:
    """Per run: its state and one tar of the small files (main run at the top, the branch under branch/)."""
    small = ("ema.safetensors", "config.json", "train_log.csv", "val_log.csv")
    for run in runs:
        shutil.copyfile(run / "state.ckpt", out / f"{run.name}.state.ckpt")
        branch = staging / "branches" / run.name
        with tarfile.open(out / f"{run.name}.tar", "w") as tar:
            for name in small:
                if (run / name).is_file():
                    tar.add(run / name, arcname=name)
                if (branch / name).is_file():
                    tar.add(branch / name, arcname=f"branch/{name}")
            for log in sorted(staging.glob(f"{run.name}.*.log")):
                tar.add(log, arcname=log.name.removeprefix(f"{run.name}."))
    for path in sorted(out.iterdir()):
        size = path.stat().st_size
        say(
            f"  $OUT/{path.name}: {size / 2**20:.1f} MiB"
            + ("  TOO LARGE to come back" if size > BACK_LIMIT else "")
        )


def summary(reports: list[RunReport], choice: Choice) -> list[str]:
    lines = [
        f"chosen: batch {choice.batch}, LR patch {choice.patch}, constant lr {choice.lr:g}",
        (
            f"{'run':10s} {'iterations: start -> main -> branch':36s} {'s/step':>7s} "
            f"{'held-out PSNR: start':>21s} {'main':>8s} {'branch':>8s}"
        ),
    ]
    for r in reports:
        iterations = f"{r.start} -> {r.main_end} -> {r.branch_end}" + (
            "" if r.branch_finished else " (unfinished)"
        )
        step = f"{r.step_s:.4f}" if r.step_s else "-"
        lines.append(
            f"{r.run:10s} {iterations:36s} {step:>7s} {r.psnr_start:>21s} {r.psnr_main:>8s} "
            f"{r.psnr_branch:>8s}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (at most three: 8 files come back)")
    parser.add_argument("--budget", type=float, help="seconds for the whole job (550; rehearsal 900)")
    parser.add_argument("--sweep-budget", type=float, help="seconds for the sweep (120; rehearsal 60)")
    parser.add_argument("--packed", type=Path, default=Path(".devdata"), help="pack_data.py output")
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="where the runs read images"
    )
    parser.add_argument("--batch", type=int, help="skip the sweep: train at this batch (with --patch)")
    parser.add_argument("--patch", type=int, help="skip the sweep: train at this LR patch (with --batch)")
    parser.add_argument("--step", type=float, help="with --batch/--patch: seconds per step, for sizing")
    parser.add_argument(
        "--parallel", action="store_true", help="train the runs side by side, each over the whole time left"
    )
    parser.add_argument("--device", default=None, help="cuda (default), or cpu with --rehearse")
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="on this CPU, on copies of the runs and 12 images: batch 1-2, patch 24/32, 3 steps a process",
    )
    opts = parser.parse_args()
    if len(opts.runs) > 3:
        parser.error("at most three runs: each brings back two files, and a job brings back eight")
    if (opts.batch is None) != (opts.patch is None):
        parser.error("--batch and --patch go together")
    rehearse = opts.rehearse
    opts.device = opts.device or ("cpu" if rehearse else "cuda")
    opts.budget = opts.budget or (900.0 if rehearse else 550.0)
    opts.sweep_budget = opts.sweep_budget or (60.0 if rehearse else 120.0)
    opts.overhead = 60.0 if rehearse else 25.0  # a process's start, data, compile, validation, save
    opts.min_branch = 2 if rehearse else MIN_BRANCH
    opts.max_steps = 3 if rehearse else 10**7
    out = Path(os.environ.get("OUT") or "gpu-train-out")
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(opts.budget, out / "gpu_train.log")
    staging = Path(tempfile.mkdtemp(prefix="gpu-train-"))

    from pack_data import pack, unpack

    clock.say(f"== data ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, budget {opts.budget:.0f} s)")
    if rehearse:
        opts.data, extra = rehearsal_data(opts.data, staging, pack, unpack)
        copies = staging / "runs"
        for run in opts.runs:
            shutil.copytree(run, copies / run.name)
        opts.runs = [copies / run.name for run in opts.runs]
    else:
        extra = []
        if opts.packed.is_dir():
            unpack(opts.packed, opts.data)
        missing = [f for f in ("T91/HR", "BSDS200/HR") if not (opts.data / f).is_dir()]
        if missing:
            sys.exit(
                f"error: {', '.join(missing)} not under {opts.data} (pack them with benchmarks/pack_data.py)"
            )

    batches, patches = ((1, 2), (24, 32)) if rehearse else (BATCHES, PATCHES)
    configs = [(b, p) for b in batches if b <= MAX_BATCH for p in patches]
    configs += [(b, p) for b in batches if b > MAX_BATCH for p in patches]  # measured last: never chosen
    measured: list[Measured] = []
    if opts.batch is None:
        clock.say(f"== sweep ({opts.sweep_budget:.0f} s at most)")
        measured = sweep(
            opts.data / "T91/HR",
            opts.device,
            configs,
            1 if rehearse else 2,
            2 if rehearse else 5,
            opts.sweep_budget,
            clock.say,
        )
        choice = pick(measured)
        step_s = next(m.seconds for m in measured if (m.batch, m.patch) == (choice.batch, choice.patch))
    else:
        choice = Choice(opts.batch, opts.patch, scaled_lr(opts.batch))
        step_s = opts.step or 0.5
    rate = choice.batch / step_s * (choice.patch / 64) ** 2
    clock.say(
        f"chosen: batch {choice.batch}, patch {choice.patch}, lr {choice.lr:g}: {rate:.1f} 64x64-equivalent "
        f"patches/s ({'meets' if rate >= TARGET else 'below'} the target of {TARGET})"
    )

    clock.say(f"== training ({clock.left():.0f} s left)")
    reports = train_runs(opts.runs, choice, step_s, clock, opts, staging, extra)
    clock.say("== results")
    table = summary(reports, choice)
    (out / "gpu_train.json").write_text(
        json.dumps(
            {
                "sweep": [
                    {**asdict(m), "patches_per_s": m.patches_per_s, "equivalent_per_s": m.equivalent_per_s}
                    for m in measured
                ],
                "choice": asdict(choice),
                "runs": [asdict(r) for r in reports],
            },
            indent=2,
        )
        + "\n"
    )
    bring_back(opts.runs, staging, out, clock.say)
    for line in table:
        clock.say(line)
    clock.say(f"== done, {clock.left():.0f} s of the budget left")
    shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
