"""The training loop of the paper's recipe: L1 loss, Adam, a closed-form learning-rate schedule (the paper's
step decay, or constant with decay branches), EMA, optional mixed precision, periodic validation, atomic
checkpoints and exact resume, one process or many under `torchrun`.

Why the loop reports through a callback: it runs inside CLIs, notebooks and DDP workers alike; only the
caller knows whether a progress bar makes sense, and only rank 0 calls back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mma import __version__
from mma.errors import ConfigError
from mma.evaluate import dataset_name, find_images
from mma.heap import reuse_freed_memory
from mma.model import build_model
from mma.runtime import autocast_dtype
from mma.train import distributed
from mma.train.budget import Budget
from mma.train.config import NETWORK_FIELDS, PROVENANCE_FIELDS, TrainConfig, recipe_changes
from mma.train.continuation import CONTINUATION_FILE, load_continuation, save_continuation
from mma.train.data import (
    IterationBatches,
    PairStore,
    PatchDataset,
    default_workers,
    make_loader,
    split_validation,
    training_images,
)
from mma.train.distributed import Placement
from mma.train.ema import EMA
from mma.train.export import export_weights, init_from
from mma.train.logs import RunLog
from mma.train.packed import TrainingImage, source_name
from mma.train.state import STATE_FILE, load_state, restore_rng, save_state
from mma.train.validate import Validation, ValidationSet, validate

log = logging.getLogger(__name__)

EMA_FILE = "ema.safetensors"  # the latest averaged weights, rewritten at every checkpoint
BEST_FILE = "best.safetensors"  # the averaged weights that scored best on the first validation set


@dataclass(frozen=True)
class TrainEvent:
    """A progress report. kind: "data" (images prepared: `iteration` of `iters` images), "start", "step",
    "log" (with the mean loss since the last log and the speed), "val", "save", "end"."""

    kind: str
    iteration: int
    iters: int
    loss: float | None = None
    lr: float | None = None
    iters_per_s: float | None = None
    validation: Validation | None = None


@dataclass(frozen=True)
class TrainResult:
    out: Path
    iteration: int
    stopped: bool  # True when a stop request ended the run before `iters`
    state: Path
    weights: Path  # the EMA weights as safetensors
    validations: tuple[Validation, ...]  # the most recent scores, one per validation set
    best_psnr: float | None
    out_of_time: bool = False  # True when the time limit ended the run (after its final validation and save)
    step_seconds: float | None = None  # with a time limit: the slowest recent step, as planned with
    seconds: float | None = None  # with a time limit: the wall time from the start of `train`
    trained: int = 0  # steps taken by this call


def saved_config(out: str | Path) -> TrainConfig | None:
    """The configuration stored in `out`'s training state, else in its continuation file (device and
    workers reset to their defaults), or None when `out` holds no run."""
    state, continuation = Path(out) / STATE_FILE, Path(out) / CONTINUATION_FILE
    if state.is_file():
        return TrainConfig.from_dict(load_state(state)["config"]).for_this_machine()
    if continuation.is_file():
        return TrainConfig.from_dict(load_continuation(continuation)["config"]).for_this_machine()
    return None


def saved_iteration(out: str | Path) -> int | None:
    """The iteration `out`'s run has reached (its state, else its continuation file), or None."""
    state, continuation = Path(out) / STATE_FILE, Path(out) / CONTINUATION_FILE
    if state.is_file():
        return int(load_state(state)["iteration"])
    if continuation.is_file():
        return load_continuation(continuation)["iteration"]
    return None


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    from_weights: bool = False,
    export: str | Path | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    stop: threading.Event | None = None,
    time_limit: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Run (or with `resume`, continue) the training that `config` describes.

    A resumed run continues from `<out>/state.ckpt`; without one, or with `from_weights`, from
    `<out>/continue.safetensors` (raw and EMA weights only: a fresh optimiser, `config.rewarm` steps of
    warm-up). `stop`, once set, makes every process save a checkpoint after the current step and return.
    `export` receives a copy of the final EMA weights (also in `<out>/ema.safetensors`). With `time_limit`
    (seconds from this call, on `clock`), the run ends early enough for a last validation and save
    (mma.train.budget); `TrainResult.out_of_time` says whether it did.
    """
    budget = Budget(time_limit, clock) if time_limit is not None else None
    placement = distributed.setup(config.device)
    try:
        trainer = Trainer(
            config,
            placement,
            resume=resume,
            from_weights=from_weights,
            progress=progress,
            stop=stop,
            budget=budget,
        )
        # on a CPU the step's tensors reuse freed heap memory instead of fresh pages (mma.heap)
        with reuse_freed_memory() if placement.device.type == "cpu" else contextlib.nullcontext():
            return trainer.run(export)
    finally:
        distributed.teardown(placement)


class Trainer:
    """One training run in this process: network, EMA copy, optimiser, data and logs."""

    def __init__(
        self,
        config: TrainConfig,
        placement: Placement,
        *,
        resume: bool = False,
        from_weights: bool = False,
        progress: Callable[[TrainEvent], None] | None = None,
        stop: threading.Event | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.budget = budget
        self.device = placement.device
        self.place = placement
        self.progress = progress if placement.main else None
        self.stop = stop
        self.out = Path(config.out)
        state_path, continuation_path = self.out / STATE_FILE, self.out / CONTINUATION_FILE
        if (state_path.is_file() or continuation_path.is_file()) and not resume:
            raise ConfigError(
                f"{self.out} already holds a run: pass --resume to continue it, or another --out"
            )
        if from_weights and not continuation_path.is_file():
            raise ConfigError(f"{continuation_path}: no continuation file to continue from")
        from_weights = resume and (from_weights or not state_path.is_file()) and continuation_path.is_file()
        saved = load_state(state_path) if resume and state_path.is_file() and not from_weights else None
        continued = load_continuation(continuation_path) if from_weights else None
        if saved is not None and continuation_path.is_file():
            # A state left behind by an older checkout must not undo the training a newer file holds.
            newer = load_continuation(continuation_path)
            if newer["iteration"] > int(saved["iteration"]):
                log.warning(
                    "%s is at iteration %d, %s at %d: continuing from the further one",
                    STATE_FILE,
                    int(saved["iteration"]),
                    CONTINUATION_FILE,
                    newer["iteration"],
                )
                saved, continued = None, newer
        if continued is not None:
            config = self._continue_from_weights(config, continued)
        self.cfg = config
        if saved is not None:
            self._check_recipe(TrainConfig.from_dict(saved["config"]), int(saved["iteration"]))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        torch.manual_seed(config.seed)
        self.model = build_model(config.variant, config.scale, **config.model).to(self.device)
        if config.init is not None and saved is None and continued is None:
            init_from(self.model, config.init)
        self.ema = EMA(self.model, config.ema)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=tuple(config.betas))
        self.lr_schedule = config.lr_schedule  # sets the optimiser's rate before every step
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.iteration = 0
        self.best: dict[str, Any] | None = None  # {"psnr", "ssim", "set", "iteration"}
        self.validations: tuple[Validation, ...] = ()
        self.validated_at = -1
        self.saved_at = -1

        self._prepare_data()
        self.net = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if placement.distributed
            else self.model
        )
        if saved is not None:
            self._restore(saved)
        if continued is not None:
            self.model.load_state_dict(continued["model"])
            self.ema.load_state_dict(continued["ema"])
            self.iteration = continued["iteration"]

    # ----- set-up -------------------------------------------------------------------------------------------

    def _check_recipe(self, saved: TrainConfig, iteration: int) -> None:
        changed = recipe_changes(saved, self.cfg, at=iteration)
        fatal = [name for name in changed if name in NETWORK_FIELDS]
        if fatal:
            raise ConfigError(
                f"{self.out} holds a run of another network ({', '.join(fatal)} differ); "
                "resume it with its own settings or choose another --out"
            )
        if changed:
            log.warning(
                "resuming with changed %s: the run is no longer identical to an uninterrupted one",
                ", ".join(changed),
            )

    def _continue_from_weights(self, config: TrainConfig, continued: dict[str, Any]) -> TrainConfig:
        """`config` with a re-warm-up from the continuation's iteration; refuses another network."""
        fatal = [
            name
            for name in recipe_changes(TrainConfig.from_dict(continued["config"]), config)
            if name in NETWORK_FIELDS
        ]
        if fatal:
            raise ConfigError(
                f"{self.out} holds a run of another network ({', '.join(fatal)} differ); "
                "resume it with its own settings or choose another --out"
            )
        iteration = continued["iteration"]
        log.warning(
            "continuing from %s at iteration %d: raw and EMA weights only, a fresh optimiser, "
            "%d iterations of warm-up",
            CONTINUATION_FILE,
            iteration,
            config.rewarm,
        )
        return config.replace(rewarm_start=iteration) if config.rewarm else config

    def _prepare_data(self) -> None:
        cfg = self.cfg
        paths = training_images(cfg.train)
        held: list[TrainingImage] = []
        if cfg.val_split:
            paths, held = split_validation(paths, cfg.val_split, cfg.seed)
        sets = [ValidationSet("held-out", tuple(held))] if held else []
        if cfg.val is not None:
            sets.append(ValidationSet(dataset_name(cfg.val), tuple(find_images(cfg.val))))
        self.val_sets = tuple(sets)

        def build() -> PairStore:
            report = (lambda done, total: self._emit("data", done, total)) if self.progress else None
            return PairStore(
                paths, cfg.scale, min_lr_size=cfg.patch, cache_dir=cfg.cache_dir, progress=report
            )

        # With a disk cache, the first process of each machine writes it and the others then read it.
        writes_first = self.place.local_rank == 0 or cfg.cache_dir is None
        if writes_first:
            self.store = build()
        distributed.barrier(self.place)
        if not writes_first:
            self.store = build()
        self.data_description = {
            "folders": [source_name(d) for d in cfg.train],
            "images": len(self.store),
            "held_out_for_validation": len(held),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])  # older states also hold a "scheduler": unused
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best = int(state["iteration"]), state["best"]
        self.saved_at = self.iteration
        self.validated_at = int(state["validated_at"])
        self.validations = tuple(Validation(**v) for v in state["validations"])
        for group in self.optimizer.param_groups:
            group["betas"] = tuple(self.cfg.betas)
        restore_rng(state["rng"])

    # ----- the loop -----------------------------------------------------------------------------------------

    def run(self, export: str | Path | None = None) -> TrainResult:
        cfg, place = self.cfg, self.place
        workers = (
            cfg.workers if cfg.workers is not None else default_workers(self.device, place.local_world_size)
        )
        batches = IterationBatches(self.iteration, cfg.iters, cfg.batch, place.rank, place.world_size)
        loader = make_loader(
            PatchDataset(self.store, cfg.patch, cfg.seed),
            batches,
            workers,
            pin_memory=self.device.type == "cuda",
        )
        if place.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        runlog = RunLog(self.out, self.iteration) if place.main else None
        self._emit("start")
        self.started_at = self.iteration
        stopped = out_of_time = False
        budget = self.budget
        steps_ahead = cfg.log_every if place.distributed else 1  # steps until processes can agree to end
        try:
            if budget is not None:
                self._measure_costs(budget, runlog)
            running, counted, tick = torch.zeros((), device=self.device), 0, time.perf_counter()
            self.model.train()
            last = budget.clock() if budget is not None else 0.0
            for lr_batch, hr_batch in loader:
                running += self.step(lr_batch, hr_batch)
                counted += 1
                self.iteration += 1
                self._emit("step")
                if budget is not None:
                    now = budget.clock()
                    budget.steps.append(now - last)
                    last = now
                it = self.iteration
                if it % cfg.log_every == 0 or it == cfg.iters:
                    loss = distributed.mean(running / counted, place).item()
                    speed = counted / (time.perf_counter() - tick)
                    lr = self.lr_schedule.lr_at(it)  # the rate of the next step
                    if runlog is not None:
                        runlog.train(it, loss, lr, speed, speed * cfg.batch)
                    self._emit("log", loss=loss, lr=lr, iters_per_s=speed)
                    running.zero_()
                    counted, tick = 0, time.perf_counter()
                paused = time.perf_counter()  # the speed counts training steps, not validation or saving
                due_val, due_save = it % cfg.val_every == 0, it % cfg.save_every == 0
                # Processes agree on ending at log points only: agreeing is a host-device sync.
                if (
                    budget is not None
                    and it < cfg.iters
                    and (not place.distributed or it % cfg.log_every == 0)
                ):
                    late = place.main and budget.must_end(
                        steps_ahead, due_val and bool(self.val_sets), due_save
                    )
                    out_of_time = distributed.any_process(late, place)
                if out_of_time:
                    break  # the final validation and save below are what the budget kept time for
                if due_val:
                    self._timed(self._validate, budget, "validation_s", runlog)
                if not place.distributed or it % cfg.log_every == 0:
                    stopped = distributed.any_process(self.stop is not None and self.stop.is_set(), place)
                if due_save or stopped:
                    self._timed(self._save, budget, "save_s")
                if stopped:
                    break
                tick += time.perf_counter() - paused
                if budget is not None:
                    last = budget.clock()
            if not stopped:
                if self.val_sets and self.validated_at != self.iteration:
                    self._validate(runlog)
                if self.saved_at != self.iteration:
                    self._save()
                if export is not None and place.main:
                    export_weights(self.ema.module, export, **self._provenance())
        finally:
            if runlog is not None:
                runlog.close()
        self._emit("end")
        return TrainResult(
            out=self.out,
            iteration=self.iteration,
            stopped=stopped,
            state=self.out / STATE_FILE,
            weights=self.out / EMA_FILE,
            validations=self.validations,
            best_psnr=self.best["psnr"] if self.best else None,
            out_of_time=out_of_time,
            trained=self.iteration - self.started_at,
            step_seconds=budget.step_s() if budget is not None else None,
            seconds=budget.elapsed() if budget is not None else None,
        )

    def _measure_costs(self, budget: Budget, runlog: RunLog | None) -> None:
        """Validate and save once before training, timed, so the budget can plan the ones that end the run.
        A validation already logged at this iteration is repeated without a new row."""
        if self.val_sets:
            began = budget.clock()
            if self.validated_at != self.iteration:
                self._validate(runlog)
            elif self.place.main:
                for images in self.val_sets:
                    validate(self.ema.module, images, self.cfg.scale, self.device)
            budget.validation_s = budget.clock() - began
        self._timed(self._save, budget, "save_s")

    @staticmethod
    def _timed(action: Callable[..., None], budget: Budget | None, cost: str, *args: Any) -> None:
        """Run `action(*args)`; with a budget, record its duration as the cost named `cost`."""
        began = budget.clock() if budget is not None else 0.0
        action(*args)
        if budget is not None:
            setattr(budget, cost, budget.clock() - began)

    def step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a uint8 batch; returns the detached loss (no host sync)."""
        lr_img = lr_batch.to(self.device, non_blocking=True).float().div_(255)
        hr_img = hr_batch.to(self.device, non_blocking=True).float().div_(255)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            sr = self.net(lr_img)
        loss = F.l1_loss(sr.float(), hr_img)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_schedule.lr_at(self.iteration)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model, self.iteration)
        return loss.detach()

    # ----- validation, checkpoints, reports ----------------------------------------------------------------

    def _validate(self, runlog: RunLog | None) -> None:
        """Score the EMA network on every validation set (rank 0; the others wait)."""
        if self.place.main and self.val_sets:
            results = tuple(
                validate(self.ema.module, images, self.cfg.scale, self.device) for images in self.val_sets
            )
            self.validations, self.validated_at = results, self.iteration
            for result in results:
                if runlog is not None:
                    runlog.val(
                        self.iteration, result.name, result.images, result.psnr, result.ssim, result.seconds
                    )
                self._emit("val", validation=result)
            first = results[0]
            if self.best is None or first.psnr > self.best["psnr"]:
                self.best = {
                    "psnr": first.psnr,
                    "ssim": first.ssim,
                    "set": first.name,
                    "iteration": self.iteration,
                }
                export_weights(self.ema.module, self.out / BEST_FILE, **self._provenance())
        distributed.barrier(self.place)

    def _save(self) -> None:
        """Write the training state and the current EMA weights (rank 0)."""
        self.saved_at = self.iteration
        if not self.place.main:
            return
        save_state(
            self.out / STATE_FILE,
            {
                "iteration": self.iteration,
                "config": self.cfg.to_dict(),
                "model_config": self.model.config.to_dict(),
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best": self.best,
                "validated_at": self.validated_at,
                "validations": [vars(v) for v in self.validations],
            },
        )
        save_continuation(
            self.out / CONTINUATION_FILE,
            self.model.state_dict(),
            self.ema.state_dict(),
            self.iteration,
            self.cfg.to_dict(),
        )
        export_weights(self.ema.module, self.out / EMA_FILE, **self._provenance())
        self._emit("save")

    def _provenance(self) -> dict[str, Any]:
        """Metadata stored with exported weights: data, recipe, iterations, and the latest validation."""
        recipe = self.cfg.to_dict()
        provenance: dict[str, Any] = {
            "trained_with": f"mma-sr {__version__}",
            "data": self.data_description,
            "iterations": self.iteration,
            "recipe": {k: recipe[k] for k in PROVENANCE_FIELDS},
        }
        if self.validations and self.validated_at == self.iteration:
            first = self.validations[0]
            provenance.update(
                val_set=first.name,
                val_images=first.images,
                val_psnr=round(first.psnr, 4),
                val_ssim=round(first.ssim, 5),
            )
        return provenance

    def _emit(self, kind: str, iteration: int | None = None, iters: int | None = None, **fields: Any) -> None:
        if self.progress is not None:
            self.progress(
                TrainEvent(
                    kind,
                    self.iteration if iteration is None else iteration,
                    self.cfg.iters if iters is None else iters,
                    **fields,
                )
            )
