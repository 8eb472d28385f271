"""The MMA network and its configurations. Knows nothing of files, images or terminals."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from mma.errors import ConfigError
from mma.model.config import CUSTOM, MIXERS, SCALES, VARIANTS, MMAConfig, check_scale, check_variant
from mma.model.network import MMA

__all__ = [
    "MIXERS",
    "MMA",
    "SCALES",
    "VARIANTS",
    "MMAConfig",
    "build_model",
    "check_scale",
    "check_variant",
    "infer_config",
]


def build_model(variant: str = "mma-t", scale: int = 4, **overrides: Any) -> MMA:
    """A freshly initialised network; `overrides` replace MMAConfig fields (e.g. num_block=2 for tests)."""
    return MMA(MMAConfig.named(variant, scale, **overrides))


def _infer_mixer(state_dict: Mapping[str, torch.Tensor]) -> str:
    keys = [key for key in state_dict if key.startswith("body.0.attn.")]
    if not keys:
        return "vim+ca"
    spatial = "cnn" if any(".attn.cnn." in key for key in keys) else "vim"
    has_ca = any(".attn.channel_attention." in key for key in keys)
    return f"{spatial}+ca" if has_ca else spatial


_BLOCK_KEY = re.compile(r"^body\.(\d+)\.")


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> MMAConfig:
    """Read variant, scale and sizes off a state dict's names and shapes (for files without metadata)."""
    try:
        num_feat = int(state_dict["conv_first.weight"].shape[0])
        up0 = int(state_dict["upsample.0.weight"].shape[0])
    except KeyError as exc:
        raise ConfigError(f"not an MMA state dict: missing {exc.args[0]!r}") from None
    blocks = {int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))}
    num_block = max(blocks) + 1 if blocks else 0
    if "upsample.2.weight" in state_dict:
        scale = 4
    elif up0 == 9 * num_feat:
        scale = 3
    elif up0 == 4 * num_feat:
        scale = 2
    else:
        raise ConfigError(f"cannot tell the scale: upsample.0 has {up0} outputs for {num_feat} features")
    fields: dict[str, Any] = {"num_feat": num_feat, "num_block": num_block}
    fields["mixer"] = _infer_mixer(state_dict)
    a_log = state_dict.get("body.0.attn.mamba.mamba.A_log")
    if a_log is not None:
        fields["d_state"] = int(a_log.shape[1])
    variant = next(
        (name for name, sizes in VARIANTS.items() if sizes == {"num_feat": num_feat, "num_block": num_block}),
        CUSTOM,
    )
    return MMAConfig(variant=variant, scale=scale, **fields)
