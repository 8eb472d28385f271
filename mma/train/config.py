"""One frozen record of every training option, built from a preset, a TOML file and flags, in that order.

Why frozen and plain: the record is stored inside every checkpoint (as a dict of plain types, so
`torch.load(weights_only=True)` reads it back) and compared on resume to refuse silent recipe changes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mma.errors import ConfigError
from mma.model import MMAConfig
from mma.train.presets import PRESETS
from mma.train.schedule import Schedule, same_rates


@dataclass(frozen=True)
class TrainConfig:
    """A training run. `batch` is the global batch (split evenly over DDP ranks); `patch` is the LR size."""

    variant: str = "mma-t"
    scale: int = 2
    model: Mapping[str, Any] = field(default_factory=dict)  # MMAConfig overrides, e.g. num_block
    train: tuple[str, ...] = ()  # HR image folders
    val: str | None = None  # HR folder scored during training; None with val_split > 0 uses held-out images
    val_split: int = 0  # training images held out for validation (chosen by `seed`)
    val_every: int = 5000
    patch: int = 64
    batch: int = 64
    iters: int = 800_000
    schedule: str = "multistep"  # or "constant" (mma.train.schedule)
    lr: float = 2e-4
    milestones: tuple[int, ...] = (300_000, 500_000, 650_000, 700_000, 750_000)  # multistep only
    gamma: float = 0.5  # multistep only
    warmup: int = 0  # iterations of linear warm-up from iteration 0
    decay_start: int | None = None  # a decay branch: lr falls linearly to 0 from here ...
    decay_iters: int = 0  # ... over this many iterations
    rewarm: int = 50  # warm-up iterations after continuing from weights alone (mma.train.continuation)
    rewarm_start: int | None = None  # the iteration such a continuation started from; None: never happened
    betas: tuple[float, float] = (0.9, 0.99)
    ema: float = 0.999
    amp: bool = True  # mixed precision: bf16 on CUDA and on CPUs with native bf16, else fp16 (CUDA)
    seed: int = 0
    log_every: int = 100
    save_every: int = 5000
    workers: int | None = None  # DataLoader workers; None = 0 on CPU, several per GPU
    cache_dir: str | None = None  # on-disk HR/LR cache (.npy, memory-mapped); None = memory only
    init: str | None = None  # weights to start from (matching names and shapes are loaded)
    out: str = "runs/train"
    device: str = "auto"

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/dicts/scalars, loadable with weights_only and dumpable as JSON."""
        data = dataclasses.asdict(self)
        for key in ("train", "milestones", "betas"):
            data[key] = list(data[key])
        data["model"] = dict(self.model)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("train", "milestones", "betas"):
            if key in values:
                values[key] = tuple(values[key]) if not isinstance(values[key], str) else (values[key],)
        if "model" in values:
            values["model"] = dict(values["model"])
        return cls(**values)

    @property
    def lr_schedule(self) -> Schedule:
        """The learning rate as a function of the iteration."""
        return Schedule(
            self.schedule,
            self.lr,
            tuple(self.milestones),
            self.gamma,
            self.warmup,
            self.decay_start,
            self.decay_iters,
            self.rewarm,
            self.rewarm_start,
        )

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def for_this_machine(self) -> TrainConfig:
        """This run with the machine options at their defaults, so a run saved on a GPU resumes on a CPU
        (or another GPU) without flags; flags given on resume still override them."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in MACHINE_FIELDS}
        return self.replace(**defaults)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

NETWORK_FIELDS = ("variant", "scale", "model")  # a checkpoint cannot continue with others
DATA_FIELDS = ("train", "val_split")
SCHEDULE_FIELDS = (
    "schedule",
    "lr",
    "milestones",
    "gamma",
    "warmup",
    "decay_start",
    "decay_iters",
    "rewarm",
    "rewarm_start",
)
# Options that change which numbers a run computes: a resumed run that changes one is no longer identical
# to an uninterrupted run.
RECIPE_FIELDS = (*NETWORK_FIELDS, *DATA_FIELDS, "patch", "batch", *SCHEDULE_FIELDS, "betas", "ema", "seed")
# The recipe as exported weights record it: the network and the data have metadata of their own.
PROVENANCE_FIELDS = (
    *(name for name in RECIPE_FIELDS if name not in NETWORK_FIELDS + DATA_FIELDS),
    "iters",
    "init",
)
# Options of the machine a run happens to run on: a resumed run chooses them afresh (see `for_this_machine`).
MACHINE_FIELDS = ("device", "workers")


def _validate(cfg: TrainConfig) -> None:
    MMAConfig.named(cfg.variant, cfg.scale, **cfg.model)  # the network's own checks
    positive = {
        "patch": cfg.patch,
        "batch": cfg.batch,
        "iters": cfg.iters,
        "val_every": cfg.val_every,
        "log_every": cfg.log_every,
        "save_every": cfg.save_every,
    }
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if cfg.val_split < 0 or cfg.seed < 0 or (cfg.workers is not None and cfg.workers < 0):
        raise ConfigError("val_split, seed and workers must not be negative")
    end = cfg.lr_schedule.decay_end  # building the schedule checks its options
    if end is not None and cfg.iters > end:
        raise ConfigError(
            f"iters {cfg.iters} goes past the end of the decay branch ({cfg.decay_start} + {cfg.decay_iters})"
        )
    if not 0 <= cfg.ema < 1:
        raise ConfigError(f"need 0 <= ema < 1, got ema={cfg.ema}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The options in a TOML file (keys are TrainConfig fields; `preset = "name"` picks the base)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10, where the package depends on tomli
        import tomli as tomllib
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None


def _layer(base: dict[str, Any], changes: Mapping[str, Any], rescale: bool) -> dict[str, Any]:
    """Apply `changes`; with `rescale`, a new `iters` without new milestones rescales the old milestones
    proportionally, so `--iters` shortens or lengthens a preset's schedule instead of leaving milestones
    past the end."""
    merged = {**base, **changes}
    if rescale and "iters" in changes and "milestones" not in changes and base.get("milestones"):
        ratio = changes["iters"] / base["iters"]
        merged["milestones"] = sorted({max(1, round(m * ratio)) for m in base["milestones"]})
    if "model" in changes:
        merged["model"] = {**base.get("model", {}), **changes["model"]}
    return merged


def build_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: TrainConfig | None = None,
) -> TrainConfig:
    """`base` (or defaults), then the preset, then the file, then `overrides` (e.g. command-line flags).

    A new `iters` rescales the milestones of the defaults, a preset or a file, but not those of `base`: a
    saved run being continued, whose milestones are iterations it has reached or planned, so a longer run
    continues its learning-rate curve instead of jumping back up it."""
    layers: list[Mapping[str, Any]] = []
    file_values = read_toml(file) if file is not None else {}
    preset = file_values.pop("preset", None) if preset is None else preset
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        layers.append(PRESETS[preset])
    layers += [file_values, {k: v for k, v in (overrides or {}).items() if v is not None}]
    values = (base or TrainConfig()).to_dict()
    for changes in layers:
        values = _layer(values, changes, rescale=base is None)
    return TrainConfig.from_dict(values)


def recipe_changes(saved: TrainConfig, new: TrainConfig, at: int | None = None) -> list[str]:
    """Names of the recipe fields that differ (a resumed run must keep them to stay exact). Given `at`, the
    iteration a run resumes from, schedule fields count only if they change the rate of a step already
    taken: a longer constant run or a decay branch starting at `at` continues exactly."""
    a, b = saved.to_dict(), new.to_dict()
    changed = [name for name in RECIPE_FIELDS if a[name] != b[name]]
    if at is not None and same_rates(saved.lr_schedule, new.lr_schedule, at):
        changed = [name for name in changed if name not in SCHEDULE_FIELDS]
    return changed
