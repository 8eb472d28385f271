"""The hyper-parameters that define one MMA network, and the two published variants."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mma.errors import ConfigError

SCALES = (2, 3, 4)

# Published configurations (docs/model.md): K = 12 for MMA-T reproduces the paper's Table 3 counts.
VARIANTS: dict[str, dict[str, int]] = {
    "mma-t": {"num_feat": 48, "num_block": 12},
    "mma-b": {"num_feat": 192, "num_block": 24},
}

CUSTOM = "custom"

# Token mixers of the paper's ablation (Table 2): the full model, "w/o CA" and "w/ CNN".
MIXERS: dict[str, str] = {
    "vim+ca": "Vision Mamba + channel attention (the published MMA)",
    "vim": "Vision Mamba only (the paper's 'w/o CA')",
    "cnn+ca": "residual CNN block + channel attention (the paper's 'w/ CNN')",
}


def check_variant(variant: str) -> str:
    """The published variant `variant` names (case-insensitive), or ConfigError listing the choices."""
    key = str(variant).strip().lower()
    if key not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return key


def check_scale(scale: object) -> int:
    """`scale` as an int when MMA is defined for it, or ConfigError naming the scales there are."""
    try:
        value = int(str(scale))
    except ValueError:
        value = None
    if value not in SCALES:
        raise ConfigError(
            f"unsupported scale {scale!r}: MMA is defined for scales {', '.join(str(s) for s in SCALES)}"
        )
    return value


@dataclass(frozen=True)
class MMAConfig:
    """Everything needed to rebuild a network; stored beside weights so a file describes itself."""

    variant: str
    scale: int
    num_feat: int
    num_block: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    ffn_expansion: float = 2.66
    ca_compress: int = 4
    ca_squeeze: int = 30
    img_range: float = 1.0
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
    mixer: str = "vim+ca"

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ConfigError(f"unknown mixer {self.mixer!r}: choose one of {', '.join(MIXERS)}")
        check_scale(self.scale)
        if self.num_feat < 1 or self.num_block < 0:
            raise ConfigError(f"invalid size num_feat={self.num_feat}, num_block={self.num_block}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.num_feat

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.num_feat / 16)

    @property
    def ffn_hidden(self) -> int:
        return int(self.num_feat * self.ffn_expansion)

    @classmethod
    def named(cls, variant: str, scale: int, **overrides: Any) -> MMAConfig:
        """The published configuration of `variant` at `scale`, with optional field overrides."""
        key = check_variant(variant)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        fields = {**VARIANTS[key], **overrides}
        return cls(variant=key, scale=check_scale(scale), **fields)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rgb_mean"] = list(self.rgb_mean)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MMAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "rgb_mean" in values:
            values["rgb_mean"] = tuple(float(v) for v in values["rgb_mean"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"incomplete model config: {exc}") from None

    @property
    def is_published(self) -> bool:
        """True when the sizes are those of a published variant (so its parameter names/shapes apply)."""
        sizes = {"num_feat": self.num_feat, "num_block": self.num_block}
        return VARIANTS.get(self.variant) == sizes and self.mixer == "vim+ca"
