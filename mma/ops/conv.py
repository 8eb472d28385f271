"""Causal depthwise conv1d with PyTorch's conv2d (one implementation for every device).

The (batch, D, L) sequence is seen as a (batch, D, 1, L) image in channels-last memory: that is the
layout the network already has (its sequences are transposed (batch, L, D) tensors), the layout in which
oneDNN's depthwise conv is fastest on CPU, and the layout the `cpu` scan reads with plain vector loads,
so the output stays channels-last. Padding both ends and keeping the first L outputs gives the causal
conv; the anti-causal (`reverse`) one mirrors the small weight and keeps the last L instead of flipping
the long input and output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    reverse: bool = False,
) -> Tensor:
    """y_t = bias + sum_k weight[:, k] x_{t-(W-1)+k} (zeros before the start); SiLU if asked."""
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', not {activation!r}")
    channels, width = weight.shape
    length = x.shape[-1]
    if reverse:
        weight = weight.flip(1)
    image = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # no copy for channels-last views
    y = F.conv2d(image, weight[:, None, None, :].to(x.dtype), bias.to(x.dtype) if bias is not None else None,
                 padding=(0, width - 1), groups=channels)
    y = (y[..., width - 1 :] if reverse else y[..., :length]).squeeze(2)
    return F.silu(y) if activation == "silu" else y
