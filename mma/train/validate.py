"""Scoring the network during training through the same engine and evaluation code as `mma eval`, so a
training-time PSNR is the number `mma eval` reports for the same weights: MATLAB-bicubic LR, whole-image
float32 inference, Y channel, crop = scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mma.engine import paper_engine
from mma.evaluate import DatasetResult, Summary, evaluate_image
from mma.train.packed import TrainingImage, read_training_image

Validation = Summary  # the name the training loop, its logs and saved states use


@dataclass(frozen=True)
class ValidationSet:
    """A named list of HR images (a folder's, or images held out of the training set)."""

    name: str
    images: tuple[TrainingImage, ...]  # files, or images of a pack


def validate(model: nn.Module, images: ValidationSet, scale: int, device: torch.device) -> Validation:
    """Mean PSNR/SSIM of `model` over `images`, as `mma eval` computes them; the model itself is untouched
    (the engine runs an eval-mode copy when it is training)."""
    engine = paper_engine(model, scale=scale, device=device)
    scores = tuple(
        evaluate_image(image.name, read_training_image(image), scale, engine.upscale_array)[1]
        for image in images.images
    )
    return DatasetResult(images.name, scale, scores).summary()
