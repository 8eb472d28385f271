"""Named training recipes: the paper's six runs and small ones that finish on a CPU.

Why presets: the paper's schedule (its Sec. 4.1; docs/training.md, "Recipes") is long and easy to mistype; a name
keeps a run reproducible, and a config file or flags still override any field.
"""

from __future__ import annotations

from typing import Any

from mma.model import SCALES

_PAPER_COMMON: dict[str, Any] = {
    "variant": "mma-b",
    "batch": 64,
    "patch": 64,
    "betas": (0.9, 0.99),
    "ema": 0.999,
    "gamma": 0.5,
    "log_every": 100,
    "save_every": 5000,
    "val_every": 5000,
}

# Paper Sec. 4.1: pre-training on ImageNet, then fine-tuning on DF2K, each scale trained separately.
_PRETRAIN: dict[str, Any] = {
    "iters": 800_000,
    "lr": 2e-4,
    "milestones": (300_000, 500_000, 650_000, 700_000, 750_000),
}
_FINETUNE: dict[str, Any] = {"iters": 250_000, "lr": 1e-5, "milestones": (125_000, 200_000, 225_000, 240_000)}

# CPU recipes: MMA-T, small batches and patches so one step takes seconds, frequent checkpoints so a run
# can be stopped and resumed at any time, validation on images carved out of the training set.
_CPU_SMALL: dict[str, Any] = {
    "variant": "mma-t",
    "scale": 2,
    "batch": 16,
    "patch": 48,
    "iters": 20_000,
    "lr": 5e-4,
    "milestones": (10_000, 15_000, 18_000, 19_000),
    "gamma": 0.5,
    "betas": (0.9, 0.99),
    "ema": 0.999,
    "val_split": 10,
    "val_every": 2000,
    "save_every": 250,
    "log_every": 10,
}
# The open-ended form of cpu-small (docs/training.md, "Schedules, extension and branches"): a main run at
# a constant rate after a short warm-up, continued with a larger --iters and released through decay branches.
_CPU_OPEN: dict[str, Any] = {
    **_CPU_SMALL,
    "schedule": "constant",
    "lr": 2.5e-4,
    "milestones": (),
    "warmup": 500,
    "iters": 40_000,
}
_CPU_TINY: dict[str, Any] = {
    **_CPU_SMALL,
    "model": {"num_feat": 16, "num_block": 2},
    "batch": 4,
    "patch": 24,
    "iters": 300,
    "milestones": (200, 250),
    "val_split": 2,
    "val_every": 100,
    "save_every": 50,
    "log_every": 5,
}

_RECIPES: dict[str, dict[str, Any]] = {
    **{f"pretrain-x{s}": {**_PAPER_COMMON, **_PRETRAIN, "scale": s} for s in SCALES},
    **{f"finetune-x{s}": {**_PAPER_COMMON, **_FINETUNE, "scale": s} for s in SCALES},
    "cpu-small": _CPU_SMALL,
    "cpu-open": _CPU_OPEN,
    "cpu-tiny": _CPU_TINY,
}
PRESETS: dict[str, dict[str, Any]] = {
    name: {"out": f"runs/{name}", **recipe} for name, recipe in _RECIPES.items()
}

DESCRIPTIONS: dict[str, str] = {
    **{f"pretrain-x{s}": f"paper pre-training at x{s}: 800K it, lr 2e-4, batch 64 (GPUs)" for s in SCALES},
    **{f"finetune-x{s}": f"paper fine-tuning at x{s}: 250K it, lr 1e-5, batch 64 (GPUs)" for s in SCALES},
    "cpu-small": "MMA-T x2 on a CPU: batch 16, LR patch 48, 20K it, lr 5e-4, 10 held-out validation images",
    "cpu-open": "cpu-small as an open-ended main run: constant lr 2.5e-4 after a 500-it warm-up, 40K it",
    "cpu-tiny": "a 16-feature, 2-block network for a minutes-long smoke run on a CPU",
}
