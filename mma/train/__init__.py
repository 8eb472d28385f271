"""Training: the paper's recipe (presets for its six runs), small CPU recipes, exact resume and DDP.

`train(build_config(preset="cpu-tiny", overrides={"train": ["../shared/data/T91"]}))` runs one;
`mma train` is the command-line face of the same call.
"""

from mma.train.branch import start_decay_branch, train_then_branch
from mma.train.config import TrainConfig, build_config
from mma.train.loop import TrainEvent, TrainResult, saved_config, train
from mma.train.presets import PRESETS
from mma.train.schedule import Schedule

__all__ = [
    "PRESETS",
    "Schedule",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "build_config",
    "saved_config",
    "start_decay_branch",
    "train",
    "train_then_branch",
]
