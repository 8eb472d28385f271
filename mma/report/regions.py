"""Where to zoom: the square window in which images of one scene disagree the most.

Why its own module: `mma compare` zooms where the methods differ, and the evaluation report zooms where
bicubic loses the most detail; both are one search, a sum over every window read from an integral image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mma.errors import ConfigError


class Crop(NamedTuple):
    """A square window of an image: left column, top row and side, in pixels."""

    x: int
    y: int
    size: int


def fitted_size(shape: Sequence[int], size: int) -> int:
    """`size` shrunk to fit the image's shorter side (a tiny image is zoomed whole)."""
    return max(1, min(int(size), int(shape[0]), int(shape[1])))


def largest_difference(images: Sequence[np.ndarray], size: int) -> Crop:
    """The `size` x `size` window (shrunk to fit) where the images differ the most.

    Per pixel, the spread (largest minus smallest value over the images, averaged over channels); per window,
    its sum. The first window in reading order wins a tie, so identical images give the top-left corner.
    """
    if not images:
        raise ConfigError("no images to compare")
    shape = images[0].shape
    if any(image.shape != shape for image in images):
        raise ConfigError(f"images to compare differ in size: {sorted({image.shape for image in images})}")
    size = fitted_size(shape, size)
    stack = np.stack([np.asarray(image, dtype=np.float64) for image in images])
    spread = stack.max(axis=0) - stack.min(axis=0)
    if spread.ndim == 3:
        spread = spread.mean(axis=2)
    integral = np.zeros((spread.shape[0] + 1, spread.shape[1] + 1))
    integral[1:, 1:] = spread.cumsum(axis=0).cumsum(axis=1)
    windows = (
        integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    )
    top, left = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return Crop(int(left), int(top), size)


def checked_crop(crop: Crop, shape: Sequence[int]) -> Crop:
    """`crop` if it lies inside an image of `shape` (rows, columns), else ConfigError saying how it does not."""
    height, width = int(shape[0]), int(shape[1])
    if crop.size < 1:
        raise ConfigError(f"crop size {crop.size}: must be at least 1 pixel")
    if crop.x < 0 or crop.y < 0 or crop.x + crop.size > width or crop.y + crop.size > height:
        raise ConfigError(
            f"crop {crop.x},{crop.y},{crop.size} does not fit in the {width}x{height} output "
            f"(X + SIZE <= {width}, Y + SIZE <= {height})"
        )
    return crop


def cut(image: np.ndarray, crop: Crop) -> np.ndarray:
    """The window's pixels (a copy, so a kept crop does not hold the whole image in memory)."""
    return np.array(image[crop.y : crop.y + crop.size, crop.x : crop.x + crop.size])
