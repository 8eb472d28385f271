"""The input a LAM analyses: the image itself or the LR made from an HR one, optionally cropped to the window.

The LAM paper shrinks an HR image with bicubic and analyses the LR; the window coordinates then refer to both
the network's output and the HR image, which makes the HR image the natural background of the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mma.imaging.resize import imresize, modcrop
from mma.lam.attribution import crop_origin


@dataclass(frozen=True)
class AnalysisInput:
    """The LR array to analyse, its HR counterpart when there is one, and the window moved onto the crop."""

    lr: np.ndarray  # (h, w, C) uint8
    hr: np.ndarray | None  # (scale*h, scale*w, C) uint8, when the LR was made from it
    x: int
    y: int
    origin: tuple[int, int] | None  # (top, left) of the crop in the uncropped LR, when cropped


def analysis_input(
    pixels: np.ndarray, x: int, y: int, window: int, scale: int, *, downscale: bool = False, crop: int = 0
) -> AnalysisInput:
    """`pixels` as the LR input, or (downscale=True) as HR cut to a multiple of `scale` and shrunk by MATLAB
    bicubic; then, for crop > 0, only the crop x crop LR pixels around the window (x, y, window in output pixels).
    """
    hr = modcrop(pixels, scale) if downscale else None
    lr = imresize(hr, 1 / scale) if hr is not None else pixels
    if not crop:
        return AnalysisInput(lr, hr, x, y, None)
    top, left = crop_origin(lr.shape[0], lr.shape[1], (x, y, x + window, y + window), scale, crop)
    lr = lr[top : top + crop, left : left + crop]
    if hr is not None:
        hr = hr[top * scale : (top + crop) * scale, left * scale : (left + crop) * scale]
    return AnalysisInput(lr, hr, x - left * scale, y - top * scale, (top, left))
