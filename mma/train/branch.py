"""Decay branches: a copy of a main run's latest state that trains on with a learning rate falling to 0.

Why a copy: an open-ended main run keeps a constant rate and is never decayed itself; each release is a short
branch off its latest checkpoint, decayed and shipped, while the main run continues later from where it was,
with its files untouched (see docs/training.md, "Schedules, extension and branches").
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mma.errors import ConfigError, OutputError
from mma.train.config import TrainConfig
from mma.train.loop import saved_config, saved_iteration


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
        shutil.copytree(run, staging, dirs_exist_ok=True)
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
