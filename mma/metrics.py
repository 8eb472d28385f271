"""PSNR and SSIM under the conventions of the SR literature (and of BasicSR, which the MMA authors use).

Why its own module: the numbers in papers depend on every detail (luma formula, border crop, 8-bit
rounding, SSIM window, valid-region filtering); these functions fix them in one place so `mma eval`,
training validation and the tests all score alike.

Conventions: uint8 inputs (the caller rounds its output to 8 bits); `crop_border` pixels dropped on each
side; by default the Y channel of MATLAB's rgb2ycbcr, unrounded float64; SSIM with an 11x11 Gaussian
window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, on the valid region only, averaged over channels.
A grayscale image scores as three equal channels.
"""

from __future__ import annotations

import math

import numpy as np

from mma.errors import ConfigError
from mma.imaging.color import rgb_to_y

_PEAK = 255.0
_C1 = (0.01 * _PEAK) ** 2
_C2 = (0.03 * _PEAK) ** 2


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


_WINDOW_1D = _gaussian_1d()


def _prepare(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate, crop and convert both images to float64 HxWxC planes (C = 1 for Y or grayscale)."""
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ConfigError(
            f"metrics expect uint8 images (round to 8 bits first), got {sr.dtype} and {hr.dtype}"
        )
    if sr.shape != hr.shape:
        raise ConfigError(f"metrics expect images of equal shape, got {sr.shape} and {hr.shape}")
    if not (sr.ndim == 2 or (sr.ndim == 3 and sr.shape[2] in (1, 3))):
        raise ConfigError(f"metrics expect HxW or HxWx3 images, got shape {sr.shape}")
    if int(crop_border) != crop_border or crop_border < 0:
        raise ConfigError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    crop_border = int(crop_border)
    height, width = sr.shape[0], sr.shape[1]
    if height <= 2 * crop_border or width <= 2 * crop_border:
        raise ConfigError(f"a {height}x{width} image is too small for crop_border={crop_border}")
    window = (slice(crop_border, height - crop_border), slice(crop_border, width - crop_border))
    sr, hr = sr[window], hr[window]
    if y_channel:
        return rgb_to_y(sr)[..., None], rgb_to_y(hr)[..., None]
    # An RGB score of a grayscale image equals the score of its one plane (three equal channels).
    return (
        sr.reshape(sr.shape[0], sr.shape[1], -1).astype(np.float64),
        hr.reshape(hr.shape[0], hr.shape[1], -1).astype(np.float64),
    )


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); `inf` for identical images."""
    a, b = _prepare(sr, hr, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(_PEAK**2 / mse)


def _filter_valid(plane: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian filter keeping only positions where the window fits inside the image."""
    size = len(_WINDOW_1D)
    rows = sum(w * plane[i : plane.shape[0] - size + 1 + i] for i, w in enumerate(_WINDOW_1D))
    return sum(w * rows[:, i : rows.shape[1] - size + 1 + i] for i, w in enumerate(_WINDOW_1D))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    var_a = _filter_valid(a * a) - mu_a**2
    var_b = _filter_valid(b * b) - mu_b**2
    cov = _filter_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / (
        (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    )
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004, Gaussian window), mean over the valid region and channels."""
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if min(a.shape[0], a.shape[1]) < len(_WINDOW_1D):
        raise ConfigError(f"SSIM needs at least {len(_WINDOW_1D)}x{len(_WINDOW_1D)} pixels after cropping")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))
