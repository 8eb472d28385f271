"""Decay branches: a copy of a main run's latest state that trains on with a learning rate falling to 0.

Why a copy: an open-ended main run keeps a constant rate and is never decayed itself; each release is a short
branch off its latest checkpoint, decayed and shipped, while the main run continues later from where it was,
with its files untouched (see docs/training.md, "Schedules, extension and branches").
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mma.errors import ConfigError, OutputError
from mma.train.budget import MARGIN, SLACK_S
from mma.train.config import TrainConfig
from mma.train.loop import TrainEvent, TrainResult, saved_config, saved_iteration, train

BRANCH_SHARE = 0.35  # of a timed job, for the decay branch after the main run
RELEASE_LOGS = "release"  # in a main run's folder: the logs of its bundled decay branch (weights/bundle.py)


def start_decay_branch(
    run: str | Path, branch: str | Path, decay_iters: int, config: TrainConfig | None = None
) -> TrainConfig:
    """Copy `run` (its state, weights and logs) to a new folder `branch` and return the branch's
    configuration: `config` (default: the run's saved one; pass it to change e.g. machine or logging options)
    plus a decay over `decay_iters` iterations from the run's saved iteration, ending there.
    `train(result, resume=True)` then trains the branch."""
    run, branch = Path(run), Path(branch)
    config = config if config is not None else saved_config(run)
    if config is None:
        raise ConfigError(f"{run} holds no training state to branch from")
    if branch.exists() and any(branch.iterdir()):
        raise ConfigError(
            f"{branch} already exists: continue that branch with --resume --out {branch}, or choose another"
        )
    if config.decay_start is not None:
        raise ConfigError(f"{run} is itself a decay branch: branch from its main run")
    start = saved_iteration(run)
    assert start is not None  # saved_config found a run
    branched = config.replace(
        out=str(branch), decay_start=start, decay_iters=decay_iters, iters=start + decay_iters
    )
    branch.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside the target and renamed into place, so an interrupted copy leaves no half a branch.
    staging = Path(tempfile.mkdtemp(prefix=f".{branch.name}.", dir=branch.parent))
    try:
        # not the main run's `release/` (the logs of an earlier bundled branch): they are not this branch's
        shutil.copytree(run, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RELEASE_LOGS))
        if branch.exists():
            branch.rmdir()  # empty, checked above
        staging.rename(branch)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{branch}: cannot copy {run} there ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return branched


def train_then_branch(
    config: TrainConfig,
    branch: str | Path,
    time_limit: float,
    *,
    share: float = BRANCH_SHARE,
    resume: bool = False,
    from_weights: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[TrainResult, TrainResult | None]:
    """A release within `time_limit` seconds: the main run trains for `1 - share` of it, then a decay
    branch into `branch` gets as many steps as the rest holds at the main run's measured step time.

    Returns the main run's result and the branch's (None when the main run was stopped or the time left
    holds no step). The branch has the rest of the time as its own limit, so an underestimate ends it
    early (`out_of_time`, the decay unfinished) rather than late."""
    if not 0 < share < 1:
        raise ConfigError(f"the branch's share of the time must be between 0 and 1, got {share}")
    began = clock()
    main = train(
        config,
        resume=resume,
        from_weights=from_weights,
        progress=progress,
        stop=stop,
        time_limit=time_limit * (1 - share),
        clock=clock,
    )
    left = time_limit - (clock() - began)
    if main.stopped or not main.step_seconds or main.seconds is None:
        return main, None
    overhead = max(0.0, main.seconds - main.trained * main.step_seconds)  # start-up, validations, saves
    steps = math.floor((left - MARGIN * overhead - SLACK_S) / (MARGIN * main.step_seconds))
    if steps < 1:
        return main, None
    branched = start_decay_branch(config.out, branch, steps, saved_config(config.out))
    branched = branched.replace(device=config.device, workers=config.workers)
    result = train(branched, resume=True, progress=progress, stop=stop, time_limit=left, clock=clock)
    return main, result
