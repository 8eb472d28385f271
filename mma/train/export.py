"""Starting from and ending in weight files: partial initialisation from another checkpoint, and export
of the averaged (EMA) weights with their provenance.

Why partial loading: an x3 or x4 network shares everything but its upsampler with the x2 network, so a
trained x2 body is a far better start than random weights (the usual practice since EDSR). Every tensor
whose name and shape match is loaded; the rest keep their fresh initialisation and are reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mma.train.state import load_state
from mma.weights.checkpoint import load_checkpoint, save_safetensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    """What a partial load did: names loaded, names with another shape (skipped), names absent."""

    loaded: tuple[str, ...]
    skipped: tuple[str, ...]
    missing: tuple[str, ...]


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file (safetensors, authors' .pth) or a training state (its EMA)."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return load_state(path)["ema"]
    return load_checkpoint(path)[0]


def init_from(model: nn.Module, path: str | Path) -> InitReport:
    """Load every tensor of `path` whose name and shape match `model`; log what was left out."""
    source = read_weights(path)
    own = model.state_dict()
    usable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    report = InitReport(
        loaded=tuple(usable),
        skipped=tuple(k for k in own if k in source and k not in usable),
        missing=tuple(k for k in own if k not in source),
    )
    model.load_state_dict(usable, strict=False)
    log.info("initialised %d of %d tensors from %s", len(report.loaded), len(own), path)
    if report.skipped:
        log.info("kept fresh (shape differs): %s", ", ".join(report.skipped))
    if report.missing:
        log.info("kept fresh (not in %s): %s", Path(path).name, ", ".join(report.missing))
    return report


def export_weights(model: nn.Module, path: str | Path, **provenance: Any) -> Path:
    """Write `model` (the EMA network) to safetensors with its config and `provenance` as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors(model, path, **provenance)
