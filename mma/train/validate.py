"""Scoring the network during training with the evaluation code (`mma.evaluate`), so training-time PSNR
is the same number `mma eval` reports: MATLAB-bicubic LR, whole-image inference, Y channel, crop = scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mma.evaluate import Upscaler, evaluate_image, read_rgb


@dataclass(frozen=True)
class ValidationSet:
    """A named list of HR images (a folder's, or images held out of the training set)."""

    name: str
    images: tuple[Path, ...]


@dataclass(frozen=True)
class Validation:
    name: str
    images: int
    psnr: float
    ssim: float
    seconds: float


def network_upscaler(model: nn.Module, device: torch.device) -> Upscaler:
    """uint8 HxWx3 LR -> uint8 HR through `model` on the whole image, rounded as BasicSR's tensor2img."""

    @torch.no_grad()
    def upscale(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(lr)).to(device).permute(2, 0, 1)[None].float() / 255
        y = model(x)[0].float().clamp_(0, 1).mul_(255).round_()
        return y.to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    return upscale


def validate(model: nn.Module, images: ValidationSet, scale: int, device: torch.device) -> Validation:
    """Mean PSNR/SSIM (Y, crop_border = scale) of `model` over `images`; leaves the model in eval mode."""
    model.eval()
    start = time.perf_counter()
    upscaler = network_upscaler(model, device)
    scores = [evaluate_image(path.name, read_rgb(path), scale, upscaler)[1] for path in images.images]
    return Validation(
        images.name,
        len(scores),
        float(np.mean([s.psnr for s in scores])),
        float(np.mean([s.ssim for s in scores])),
        time.perf_counter() - start,
    )
