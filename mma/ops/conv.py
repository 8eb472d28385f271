"""Causal depthwise conv1d via `torch.nn.functional.conv1d` (one implementation for every device).

The anti-causal (`reverse`) version pads on the right and mirrors the small weight instead of
flipping the long input and output.
"""

from __future__ import annotations

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
    width = weight.shape[1]
    if reverse:
        x = F.pad(x, (0, width - 1))
        weight = weight.flip(1)
    else:
        x = F.pad(x, (width - 1, 0))
    if bias is not None:
        bias = bias.to(x.dtype)
    y = F.conv1d(x, weight[:, None, :].to(x.dtype), bias, groups=weight.shape[0])
    return F.silu(y) if activation == "silu" else y
