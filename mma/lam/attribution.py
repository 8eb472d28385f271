"""Local attribution maps (Gu & Dong, CVPR 2021; Eq. 9 of the MMA paper) for any differentiable SR network.

LAM asks which input pixels make an SR network draw the edges and textures of one small output window. A
gradient detector D sums the gradient magnitude of the l x l output window; integrated gradients of D(F(.))
along a path gamma from a blurred copy of the input (no detail) to the input, multiplied by d gamma / d alpha,
give each input pixel's share of D(F(input)) - D(F(baseline)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mma.errors import ConfigError
from mma.imaging.io import array_to_float
from mma.lam.diffusion import diffusion_index
from mma.lam.path import blur, kernel_radius, path_sigmas

# Keeps the derivative of sqrt finite where the output window is perfectly flat.
_FLAT_EPS = 1e-12

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LAMResult:
    """One local attribution map. Arrays are numpy; images are (H, W, C) in the model's value range."""

    attribution: np.ndarray  # (h, w) float64: |sum over channels| of the path-integrated gradient, LR grid
    signed: np.ndarray  # (h, w) float64: the same before the absolute value; sums to detector_gain
    diffusion_index: float  # DI of `attribution`, in [0, 100]
    image: np.ndarray  # (h, w, C) float32: the analysed input
    baseline: np.ndarray  # (h, w, C) float32: the blurred input the path starts from
    output: np.ndarray  # (sh, sw, C) float32: the network's output for the input
    # The window (left, top, right, bottom) in output pixels, right and bottom exclusive.
    box: tuple[int, int, int, int]
    scale: int
    detector_start: float  # D(F(baseline))
    detector_end: float  # D(F(input))

    @property
    def detector_gain(self) -> float:
        """D(F(input)) - D(F(baseline)): what the attributions share out."""
        return self.detector_end - self.detector_start

    @property
    def completeness_gap(self) -> float:
        """sum(signed) - detector_gain: the path discretisation error; more steps shrink it."""
        return float(self.signed.sum()) - self.detector_gain


def gradient_detector(output: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Per-sample sum of the gradient magnitudes inside `box` of (B, C, H, W): how much edge the window holds.

    Forward differences are taken between pixels of the window only, so D depends on nothing outside it.
    """
    left, top, right, bottom = box
    window = output[:, :, top:bottom, left:right]
    corner = window[:, :, :-1, :-1]
    dx = window[:, :, :-1, 1:] - corner
    dy = window[:, :, 1:, :-1] - corner
    return torch.sqrt(dx * dx + dy * dy + _FLAT_EPS).sum(dim=(1, 2, 3))


def lam(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    x: int,
    y: int,
    window: int = 16,
    *,
    steps: int = 50,
    sigma: float = 1.2,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> LAMResult:
    """The local attribution map of the `window` x `window` output patch whose top-left pixel is (x, y).

    `image` is the network's input: a float tensor (C, H, W) or (1, C, H, W), or an HxWxC numpy array (uint8,
    uint16 or float in [0, 1]). x, y and window are in output (HR) pixels. The path has `steps` points (LAM
    uses 50) and starts from the input blurred with `sigma` (LAM: 1.2). Path points go through the network
    `batch_size` at a time, so memory is that of one such batch with autograd. The network runs in eval mode
    on its own device and dtype; its train/eval mode and its parameters' requires_grad are restored
    afterwards. `progress(done, steps)` is called after each batch.
    """
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma must be a positive number, got {sigma}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    lr = _as_batch(image).to(device=device, dtype=dtype)
    radius = kernel_radius(sigma)
    sigmas = path_sigmas(sigma, steps)
    was_training = model.training
    # Only the input's gradient is wanted: parameters that ask for theirs cost the backward about a fifth more
    # (the scan's backward computes what its inputs ask for), so they stop asking until the end.
    asking = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.eval()
    for parameter in asking:
        parameter.requires_grad_(False)
    try:
        baseline = blur(lr, sigmas[0], radius)
        with torch.no_grad():
            start_output = model(baseline)
        scale = _scale_of(lr, start_output)
        box = _window_box(x, y, window, start_output.shape)
        detector_start = float(gradient_detector(start_output, box)[0])
        signed = torch.zeros(lr.shape[1:], dtype=torch.float64)
        for first in range(1, steps + 1, batch_size):
            indices = range(first, min(first + batch_size, steps + 1))
            before = torch.cat([blur(lr, sigmas[i - 1], radius) for i in indices])
            points = torch.cat([blur(lr, sigmas[i], radius) for i in indices]).requires_grad_(True)
            output = model(points)
            detector = gradient_detector(output, box)
            (grad,) = torch.autograd.grad(detector.sum(), points)
            signed += (grad * (points.detach() - before)).sum(dim=0).to(device="cpu", dtype=torch.float64)
            if progress is not None:
                progress(indices[-1], steps)
        end_output = output[-1].detach()
        detector_end = float(detector[-1].detach())
    finally:
        model.train(was_training)
        for parameter in asking:
            parameter.requires_grad_(True)
    channel_sum = signed.sum(dim=0).numpy()
    if not np.isfinite(channel_sum).all():
        raise FloatingPointError(
            "the attribution is not finite: the network produced NaN or infinite gradients"
        )
    attribution = np.abs(channel_sum)
    return LAMResult(
        attribution=attribution,
        signed=channel_sum,
        diffusion_index=diffusion_index(attribution),
        image=_to_hwc(lr[0]),
        baseline=_to_hwc(baseline[0]),
        output=_to_hwc(end_output),
        box=box,
        scale=scale,
        detector_start=detector_start,
        detector_end=detector_end,
    )


def crop_origin(
    height: int, width: int, box: tuple[int, int, int, int], scale: int, size: int
) -> tuple[int, int]:
    """(top, left) of the `size` x `size` input crop centred on an output window, kept inside the image.

    LAM of a whole image costs one forward and backward pass per path step; analysing a crop bounds that cost
    (the network then sees only the crop, which changes what a global-receptive-field model can draw on).
    """
    left, top, right, bottom = box

    def start(lo: int, hi: int, length: int) -> int:
        first, end = lo // scale, -(-hi // scale)  # the input pixels under the window
        if end - first > size:
            raise ConfigError(
                f"a crop of {size} input pixels cannot hold a {hi - lo}-pixel window at x{scale}"
            )
        return max(0, min(first - (size - (end - first)) // 2, length - size))

    return start(top, bottom, height), start(left, right, width)


def _as_batch(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(1, C, H, W) float tensor from the accepted input forms."""
    if isinstance(image, np.ndarray):
        image, _ = array_to_float(image)
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ConfigError("LAM needs a float tensor (C, H, W) / (1, C, H, W) or an HxWxC numpy image")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1 or min(image.shape[-2:]) < 1:
        raise ConfigError(f"LAM analyses one image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    return image.detach()


def _scale_of(lr: torch.Tensor, output: torch.Tensor) -> int:
    """The integer factor between input and output, read off the output (so any SR network works)."""
    height, width = lr.shape[-2:]
    out_h, out_w = output.shape[-2:]
    if output.ndim != 4 or out_h % height or out_w % width or out_h // height != out_w // width:
        raise ConfigError(
            f"the network mapped {height}x{width} to {out_w}x{out_h}: not one integer scale (not an SR model?)"
        )
    return out_h // height


def _window_box(x: int, y: int, window: int, shape: torch.Size) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) window, checked to lie inside the output of `shape`."""
    out_h, out_w = shape[-2:]
    if window < 2:
        raise ConfigError(
            f"the window must be at least 2 pixels wide (gradients need neighbours), got {window}"
        )
    if x < 0 or y < 0 or x + window > out_w or y + window > out_h:
        raise ConfigError(
            f"window {window}x{window} at x={x}, y={y} leaves the {out_w}x{out_h} output "
            f"(x must be in 0..{out_w - window}, y in 0..{out_h - window})"
        )
    return x, y, x + window, y + window


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().to(device="cpu", dtype=torch.float32).permute(1, 2, 0).numpy()
