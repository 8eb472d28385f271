"""MATLAB-compatible bicubic `imresize` for numpy arrays and torch tensors.

Why: super-resolution benchmarks build their low-resolution inputs with MATLAB's `imresize(..., 'bicubic')`.
Any other resampler (PIL, OpenCV, torch `interpolate`) shifts PSNR by tenths of a dB, so paper numbers are
only reproducible with the same kernel, border rule, pass order and rounding.

MATLAB's algorithm, reproduced here: bicubic kernel with a = -0.5, stretched by 1/scale when shrinking
(antialiasing), output length ceil(scale * input length), symmetric (mirror, edge repeated) borders, the
height resized before the width. Integer images are rounded (half away from zero) and clipped after each
pass; float images are not rounded. Each axis becomes a small table of weights and source indices: numpy
applies it as `taps` vectorised gathers (in MATLAB's summation order), torch spreads it into an
(out, in) matrix and multiplies, which is what CPUs and GPUs run fastest.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from mma.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

ArrayT = TypeVar("ArrayT", "np.ndarray", "torch.Tensor")

_KERNEL_WIDTH = 4.0  # support of the bicubic kernel, in input pixels, before antialias stretching


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' bicubic kernel with a = -0.5 (MATLAB's `cubic`), zero outside |x| < 2."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def output_length(in_length: int, scale: float) -> int:
    """MATLAB's ceil(scale * length), except that float noise does not round up: 50 * 1.1 is
    55.00000000000001 in floating point, and the output is 55 samples, not 56."""
    return max(1, math.ceil(in_length * scale - 1e-9))


@functools.lru_cache(maxsize=128)
def axis_weights(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_length, taps) float64 and 0-based source indices (out_length, taps) for one axis.

    Row i holds the contributions to output sample i; rows sum to 1. Cached (and read-only) because a
    data pipeline resizes many images of the same size.
    """
    shrink = scale < 1
    width = _KERNEL_WIDTH / scale if shrink else _KERNEL_WIDTH
    u = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    source = left[:, None] + np.arange(taps, dtype=np.float64)  # 1-based, may fall outside the image
    distance = u[:, None] - source
    weights = scale * cubic(scale * distance) if shrink else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric border: the sequence 1..n, n..1 repeated, as MATLAB's `aux` lookup table.
    period = 2 * in_length
    folded = np.mod(source - 1.0, period).astype(np.int64)
    indices = np.where(folded < in_length, folded, period - 1 - folded)
    used = np.any(weights != 0, axis=0)
    weights, indices = np.ascontiguousarray(weights[:, used]), np.ascontiguousarray(indices[:, used])
    weights.flags.writeable = False
    indices.flags.writeable = False
    return weights, indices


def _resize_axis(x: np.ndarray, weights: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """Sum over taps of weight * gathered source along `axis`, taps in ascending order as MATLAB does
    (the summation order decides the rare exact .5 cases that uint8 rounding sees)."""
    shape = [1] * x.ndim
    shape[axis] = -1
    out = x.take(indices[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for tap in range(1, indices.shape[1]):
        out += x.take(indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return out


def interpolation_matrix(in_length: int, scale: float) -> np.ndarray:
    """The (out_length, in_length) float64 matrix of one axis' resize (the tables of `axis_weights` spread
    out; a border pixel reached twice through mirroring gets both weights). Matrix products are what
    torch runs fastest, on CPU and GPU alike."""
    out_length = output_length(in_length, scale)
    weights, indices = axis_weights(in_length, out_length, scale)
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
    return matrix


def _round_clip(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round half away from zero (as MATLAB converts to integers) and saturate to `dtype`'s range."""
    info = np.iinfo(dtype)
    return np.clip(np.trunc(x + np.copysign(0.5, x)), info.min, info.max)


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"resize scale must be a positive finite number, got {scale!r}")
    return scale


def _imresize_numpy(image: np.ndarray, scale: float) -> np.ndarray:
    if image.ndim not in (2, 3):
        raise ConfigError(f"imresize expects an HxW or HxWxC array, got shape {image.shape}")
    if image.dtype.kind not in "uif" or image.size == 0:
        raise ConfigError(
            f"imresize expects a non-empty integer or float array, got {image.dtype} {image.shape}"
        )
    integer = image.dtype.kind in "ui"
    work = image.astype(np.float64)
    for axis in (0, 1):
        weights, indices = axis_weights(work.shape[axis], output_length(work.shape[axis], scale), scale)
        work = _resize_axis(work, weights, indices, axis)
        if integer:
            work = _round_clip(work, image.dtype)
    return work.astype(image.dtype)


def _imresize_torch(image: torch.Tensor, scale: float) -> torch.Tensor:
    import torch

    if not image.is_floating_point() or image.ndim < 2 or image.numel() == 0:
        raise ConfigError(
            f"imresize expects a non-empty float tensor (..., H, W), got {image.dtype} {tuple(image.shape)}"
        )

    def as_tensor(matrix: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(matrix).to(device=image.device, dtype=image.dtype)

    height = as_tensor(interpolation_matrix(image.shape[-2], scale))
    width = as_tensor(interpolation_matrix(image.shape[-1], scale))
    return height @ image @ width.T


def imresize(image: ArrayT, scale: float) -> ArrayT:
    """Resize by `scale` exactly as MATLAB's `imresize(image, scale, 'bicubic')`.

    numpy: HxW or HxWxC; integer input gives the same dtype, rounded and clipped after each pass; float
    input gives the same float dtype, computed in float64 without rounding. torch: a float tensor
    (..., H, W) resized over its last two axes in its own dtype and device (no rounding).
    """
    scale = _check_scale(scale)
    torch_module = sys.modules.get("torch")  # a tensor can only exist if torch is already imported
    if torch_module is not None and isinstance(image, torch_module.Tensor):
        return _imresize_torch(image, scale)
    if isinstance(image, np.ndarray):
        return _imresize_numpy(image, scale)
    raise ConfigError(f"imresize expects a numpy array or a torch tensor, got {type(image).__name__}")


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right edges so height and width are multiples of `scale` (SR benchmark rule)."""
    if int(scale) != scale or scale < 1:
        raise ConfigError(f"modcrop scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    height, width = image.shape[0], image.shape[1]
    return image[: height - height % scale, : width - width % scale]
