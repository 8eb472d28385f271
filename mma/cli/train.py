"""`mma train`: run a training recipe (a preset, a TOML file, flags) with progress shown; Ctrl-C saves.

Under `torchrun` every process runs this command; only rank 0 draws the bar and writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mma.cli.app import command
from mma.errors import ConfigError
from mma.progress import Meter

if TYPE_CHECKING:  # pragma: no cover
    from mma.train import TrainConfig, TrainEvent, TrainResult


class _TqdmHandler(logging.Handler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record))


@contextlib.contextmanager
def _log_above_bar() -> Iterator[None]:
    """Library log records (init report, warnings) shown above the bar; rank 0 also shows INFO."""
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("mma")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: finish the step, save, exit. A second Ctrl-C aborts at once."""

    def request(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        logging.getLogger("mma.train").warning("stopping after this step (saving a checkpoint)...")

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Progress:
    """Turns training events into progress (`mma.progress.Meter`: a bar on a terminal, a plain line every few
    seconds in a log file or a batch job's output): preparing the LR images, then the iterations."""

    def __init__(self) -> None:
        self.meter: Meter | None = None
        self.first = 0  # the iteration this process started from (a resumed run's estimate counts from it)
        self.iters = 0
        self.loss = ""  # the latest logged loss and rate, shown beside the iteration

    def __call__(self, event: TrainEvent) -> None:
        from tqdm import tqdm

        if event.kind == "data":
            if self.meter is None:
                self.meter = Meter("preparing LR images", total=event.iters, unit="img")
            self.meter.set(event.iteration)
            if event.iteration == event.iters:
                self._close()
        elif event.kind == "start":
            self._close()
            self.first, self.iters = event.iteration, event.iters
            self.meter = Meter("training", total=max(event.iters - event.iteration, 1), unit="it")
            self.meter.set(0, note=f"iteration {event.iteration}/{event.iters}")
        elif event.kind == "step" and self.meter is not None:
            self.meter.set(event.iteration - self.first, note=self._note(event.iteration))
        elif event.kind == "log" and self.meter is not None:
            self.loss = f", loss {event.loss:.4f}, lr {event.lr:.2e}"
            self.meter.stage(self._note(event.iteration))
        elif event.kind == "val" and event.validation is not None:
            v = event.validation
            tqdm.write(
                f"iteration {event.iteration}: {v.name} ({v.images} images) "
                f"PSNR {v.psnr:.3f} dB, SSIM {v.ssim:.4f}"
            )
        elif event.kind == "end":
            self._close()

    def _note(self, iteration: int) -> str:
        return f"iteration {iteration}/{self.iters}{self.loss}"

    def _close(self) -> None:
        if self.meter is not None:
            self.meter.close()
            self.meter = None


def _iterations(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"--milestones takes iterations separated by commas, got {text!r}") from None


def _branch(
    cfg: TrainConfig,
    resume: bool,
    out: Path | None,
    branch: Path | None,
    decay_iters: int | None,
    iters: int | None,
) -> TrainConfig:
    """The configuration of a new decay branch of the run in `out`, after copying the run into `branch`."""
    from mma.train import start_decay_branch

    if not resume or out is None or branch is None or decay_iters is None:
        raise ConfigError("a decay branch needs --resume --out RUN --decay-branch NEW_DIR --decay-iters K")
    if iters is not None:
        raise ConfigError(
            "--iters and --decay-branch exclude each other: the branch ends after --decay-iters"
        )
    return start_decay_branch(out, branch, decay_iters, cfg)


def _list_presets() -> None:
    from mma.train.presets import DESCRIPTIONS

    for name, text in DESCRIPTIONS.items():
        typer.echo(f"{name:12s} {text}")


@command(
    "train",
    help="Train MMA: a preset (--list-presets) or a TOML config, overridden by flags. "
    "Multi-GPU: torchrun --nproc_per_node N -m mma train ...",
)
def train_command(
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Named recipe (see --list-presets).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file of training options.")
    ] = None,
    data: Annotated[
        list[Path] | None, typer.Option("--data", "-d", help="HR image folder (repeatable).")
    ] = None,
    val: Annotated[Path | None, typer.Option("--val", help="HR folder scored during training.")] = None,
    val_split: Annotated[int | None, typer.Option("--val-split", help="Training images held out.")] = None,
    scale: Annotated[int | None, typer.Option("--scale", "-s", help="2, 3 or 4.")] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="mma-t or mma-b.")] = None,
    mixer: Annotated[
        str | None,
        typer.Option("--mixer", help="Token mixer: vim+ca (MMA), vim (w/o CA) or cnn+ca (w/ CNN)."),
    ] = None,
    iters: Annotated[
        int | None,
        typer.Option(
            "--iters", help="Total iterations (a preset's milestones rescale; a resumed run's stay)."
        ),
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", help="Global batch size.")] = None,
    patch: Annotated[int | None, typer.Option("--patch", help="LR patch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (before decay).")] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="multistep (step decay) or constant (open-ended).")
    ] = None,
    milestones: Annotated[
        str | None, typer.Option("--milestones", help="Multistep decay iterations, e.g. 3000,5000.")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option("--warmup", help="Linear warm-up iterations from iteration 0.")
    ] = None,
    decay_branch: Annotated[
        Path | None,
        typer.Option(
            "--decay-branch", help="With --resume --out RUN: copy RUN here and decay it (RUN stays)."
        ),
    ] = None,
    decay_iters: Annotated[
        int | None, typer.Option("--decay-iters", help="Iterations of the --decay-branch decay to 0.")
    ] = None,
    branch_share: Annotated[
        float,
        typer.Option(
            "--branch-share",
            help="With --time-limit and --decay-branch (no --decay-iters): the share of the time for the branch.",
        ),
    ] = 0.35,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time-limit",
            help="Wall-clock budget (840, 90s, 14m, 1h30m): end early enough to validate and save.",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the weights and the data order.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (state, logs, weights).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out if there is one.")
    ] = False,
    from_weights: Annotated[
        bool,
        typer.Option(
            "--from-weights",
            help="With --resume: continue from the run's continue.safetensors (raw + EMA weights, "
            "a fresh optimiser) even when its state.ckpt is there.",
        ),
    ] = False,
    rewarm: Annotated[
        int | None,
        typer.Option("--rewarm", help="Warm-up iterations after continuing from weights alone (50)."),
    ] = None,
    init: Annotated[
        Path | None, typer.Option("--init", help="Start from these weights (matching tensors).")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="Also write the final EMA weights here.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Data-loader processes.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Keep HR/LR arrays on disk here.")
    ] = None,
    val_every: Annotated[int | None, typer.Option("--val-every", help="Validate every N iterations.")] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", help="Checkpoint every N iterations.")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option("--log-every", help="Log the loss every N iterations.")
    ] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="List the presets and exit.")] = False,
) -> None:
    if list_presets:
        _list_presets()
        return
    from mma.train import build_config, saved_config, train
    from mma.train.budget import parse_duration

    overrides: dict[str, Any] = {
        "train": [str(d) for d in data] if data else None,
        "val": str(val) if val else None,
        "val_split": val_split,
        "scale": scale,
        "variant": variant,
        "iters": iters,
        "batch": batch,
        "patch": patch,
        "lr": lr,
        "schedule": schedule,
        "milestones": _iterations(milestones) if milestones is not None else None,
        "warmup": warmup,
        "rewarm": rewarm,
        "seed": seed,
        "out": str(out) if out else None,
        "init": str(init) if init else None,
        "device": device,
        "workers": workers,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "val_every": val_every,
        "save_every": save_every,
        "log_every": log_every,
        "model": {"mixer": mixer} if mixer else None,
    }
    base = None
    if preset is None and config is None:
        base = saved_config(out) if resume and out is not None else None
        if base is None:
            raise ConfigError(
                "choose a recipe: --preset NAME (see --list-presets) or --config FILE "
                "(or --resume --out DIR to continue a run)"
            )
    cfg = build_config(preset, config, overrides, base=base)
    limit = parse_duration(time_limit) if time_limit is not None else None
    timed_branch = decay_branch is not None and decay_iters is None and limit is not None
    if timed_branch:
        if not resume or out is None:
            raise ConfigError(
                "a timed release needs --resume --out RUN --decay-branch NEW_DIR --time-limit T"
            )
        if export is not None:
            raise ConfigError(
                "--export and a timed --decay-branch exclude each other: export the branch after"
            )
    elif decay_branch is not None or decay_iters is not None:
        cfg, resume = _branch(cfg, resume, out, decay_branch, decay_iters, iters), True
    stop = threading.Event()
    with _log_above_bar(), _stop_on_signals(stop):
        if timed_branch:
            from mma.train.branch import train_then_branch

            assert decay_branch is not None and limit is not None
            main, branched = train_then_branch(
                cfg,
                decay_branch,
                limit,
                share=branch_share,
                resume=resume,
                from_weights=from_weights,
                progress=_Progress(),
                stop=stop,
            )
            results = [main] if branched is None else [main, branched]
        else:
            results = [
                train(
                    cfg,
                    resume=resume,
                    from_weights=from_weights,
                    export=export,
                    progress=_Progress(),
                    stop=stop,
                    time_limit=limit,
                )
            ]
    if os.environ.get("RANK", "0") != "0":
        return
    if timed_branch and len(results) == 1 and not results[0].stopped:
        typer.echo("no time left for a decay branch after the main run", err=True)
    for result in results:
        _report(result, export if not timed_branch else None)


def _report(result: TrainResult, export: Path | None) -> None:
    """The end of one run: where it stands, its last scores; exit 130 when a stop request ended it."""
    if result.stopped:
        typer.echo(
            f"stopped at iteration {result.iteration}; state saved in {result.state} "
            f"(continue with: mma train --resume --out {result.out})",
            err=True,
        )
        raise typer.Exit(130)
    timing = ""
    if result.step_seconds is not None and result.seconds is not None:
        timing = f" in {result.seconds:.0f} s ({result.step_seconds:.3f} s per step at most)"
    ended = " (time limit: ended early enough to validate and save)" if result.out_of_time else ""
    typer.echo(
        f"done: {result.iteration} iterations{timing}{ended}; EMA weights {result.weights}"
        + (f", exported to {export}" if export else "")
    )
    for v in result.validations:
        typer.echo(f"{v.name}: PSNR {v.psnr:.3f} dB, SSIM {v.ssim:.4f} ({v.images} images)")
