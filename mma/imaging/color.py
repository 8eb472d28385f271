"""The luma (Y) of MATLAB's `rgb2ycbcr`, used to score super-resolution on the Y channel.

Why: SR papers report PSNR/SSIM on ITU-R BT.601 Y in studio swing ([16, 235] for 8-bit), exactly as
MATLAB computes it; a different luma formula (e.g. PIL's "L", full-swing BT.601) shifts the scores.
"""

from __future__ import annotations

import numpy as np

from mma.errors import ConfigError

# Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1]; divided by 255 for 8-bit values.
_Y_COEFFICIENTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_Y_OFFSET = 16.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y of a uint8 HxWx3 image as float64 in [16, 235], not rounded (as BasicSR scores it).

    A grayscale HxW (or HxWx1) image counts as three equal channels, i.e. Y = 16 + 219/255 * gray,
    which is how BasicSR reads grayscale test images.
    """
    if image.dtype != np.uint8:
        raise ConfigError(f"rgb_to_y expects a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        return _Y_OFFSET + image.astype(np.float64) @ _Y_COEFFICIENTS
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        gray = image.reshape(image.shape[0], image.shape[1]).astype(np.float64)
        return _Y_OFFSET + gray * _Y_COEFFICIENTS.sum()
    raise ConfigError(f"rgb_to_y expects an HxW or HxWx3 image, got shape {image.shape}")
