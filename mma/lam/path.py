"""The LAM integration path: the input blurred by a Gaussian whose sigma shrinks linearly to zero.

A blurred image is the "absence of detail" baseline of Gu & Dong (CVPR 2021): SR networks respond to edges and
textures, so removing them (rather than the whole signal, as a black baseline would) isolates what the detail of
each input pixel contributes to the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kernel_radius(sigma: float) -> int:
    """Half-width that holds a Gaussian's mass to 3 sigma (9 taps for the LAM default sigma = 1.2)."""
    return max(1, math.ceil(3.0 * sigma))


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """Sampled, normalised 1-D Gaussian of 2 * radius + 1 taps in float64; sigma = 0 is the identity (a delta)."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    if sigma == 0:
        return (taps == 0).to(torch.float64)
    weights = torch.exp(-(taps**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def blur(image: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), mirrored at the borders (replicated on images too small to mirror).

    The product of two normalised 1-D kernels is the normalised isotropic 2-D kernel, so this equals the
    2-D filter of the LAM paper at a fraction of the cost.
    """
    if sigma == 0:
        return image
    channels = image.shape[1]
    kernel = gaussian_kernel(sigma, radius).to(device=image.device, dtype=image.dtype)
    mode = "reflect" if radius < min(image.shape[-2:]) else "replicate"
    padded = F.pad(image, (radius, radius, radius, radius), mode=mode)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def path_sigmas(sigma: float, steps: int) -> list[float]:
    """sigma at alpha = 0, 1/steps, ..., 1: from the full blur (the baseline) down to 0 (the input itself)."""
    return [sigma * (1.0 - i / steps) for i in range(steps + 1)]
