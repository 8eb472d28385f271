"""Putting weights into a network: one clear error when they do not fit, and a model straight from a file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mma.errors import CheckpointError, ConfigError
from mma.model import MMA, MMAConfig, infer_config
from mma.weights.checkpoint import check_fit, describe, load_checkpoint


def load_weights_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """`load_state_dict(strict=True)`, but a misfit gives one line naming expected vs found instead of a wall."""
    config = getattr(model, "config", None)
    target = describe(config) if isinstance(config, MMAConfig) else type(model).__name__
    check_fit(model.state_dict(), state_dict, target)
    model.load_state_dict(state_dict, strict=True)
    return model


def config_from_metadata(metadata: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> MMAConfig:
    """The config a file declares (written by `save_safetensors`), else the one its shapes imply."""
    declared = metadata.get("config")
    if isinstance(declared, Mapping):
        return MMAConfig.from_dict(declared)
    try:
        return infer_config(state_dict)
    except ConfigError as exc:
        raise CheckpointError(f"not an MMA checkpoint: {exc}") from None


def model_from_file(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    config: MMAConfig | None = None,
) -> MMA:
    """An `eval()` network holding the weights of a safetensors or `.pth` file.

    The architecture comes from `config`, else the file's metadata, else its tensor shapes, so authors'
    checkpoints load without being told their variant or scale.
    """
    state_dict, metadata = load_checkpoint(path)
    config = config or config_from_metadata(metadata, state_dict)
    model = MMA(config)
    try:
        load_weights_into(model, state_dict)
    except CheckpointError as exc:
        raise CheckpointError(f"{os.fspath(path)}: {exc}") from None
    return model.to(device=device, dtype=dtype).eval()
