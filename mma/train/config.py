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
from mma.model import SCALES, VARIANTS
from mma.train.presets import PRESETS


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
    lr: float = 2e-4
    milestones: tuple[int, ...] = (300_000, 500_000, 650_000, 700_000, 750_000)
    gamma: float = 0.5
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

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def for_this_machine(self) -> TrainConfig:
        """This run with the machine options at their defaults, so a run saved on a GPU resumes on a CPU
        (or another GPU) without flags; flags given on resume still override them."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in MACHINE_FIELDS}
        return self.replace(**defaults)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# Options that change which numbers a run computes: a resumed run that changes one is no longer identical
# to an uninterrupted run. The first three also change the network, so a checkpoint cannot continue at all.
RECIPE_FIELDS = (
    "variant",
    "scale",
    "model",
    "train",
    "val_split",
    "patch",
    "batch",
    "lr",
    "milestones",
    "gamma",
    "betas",
    "ema",
    "seed",
)
NETWORK_FIELDS = RECIPE_FIELDS[:3]
# Options of the machine a run happens to run on: a resumed run chooses them afresh (see `for_this_machine`).
MACHINE_FIELDS = ("device", "workers")


def _validate(cfg: TrainConfig) -> None:
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {cfg.variant!r}: choose one of {', '.join(VARIANTS)}")
    if cfg.scale not in SCALES:
        raise ConfigError(f"unsupported scale {cfg.scale}: choose one of {SCALES}")
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
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
    if list(cfg.milestones) != sorted(set(cfg.milestones)) or any(m < 1 for m in cfg.milestones):
        raise ConfigError(f"milestones must be increasing positive iterations, got {list(cfg.milestones)}")
    if not 0 <= cfg.ema < 1 or not 0 < cfg.gamma <= 1:
        raise ConfigError(f"need 0 <= ema < 1 and 0 < gamma <= 1, got ema={cfg.ema}, gamma={cfg.gamma}")
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


def _layer(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `changes`; a new `iters` without new milestones rescales the old milestones proportionally,
    so `--iters` shortens or lengthens a preset's schedule instead of leaving milestones past the end."""
    merged = {**base, **changes}
    if "iters" in changes and "milestones" not in changes and base.get("milestones"):
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
    """`base` (or defaults), then the preset, then the file, then `overrides` (e.g. command-line flags)."""
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
        values = _layer(values, changes)
    return TrainConfig.from_dict(values)


def recipe_changes(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Names of the recipe fields that differ (a resumed run must keep them to stay exact)."""
    a, b = saved.to_dict(), new.to_dict()
    return [name for name in RECIPE_FIELDS if a[name] != b[name]]
