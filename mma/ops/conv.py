"""Causal depthwise conv1d with PyTorch's conv2d (one implementation for every device).

The (batch, D, L) sequence is seen as a (batch, D, 1, L) image in channels-last memory: that is the
layout the network already has (its sequences are transposed (batch, L, D) tensors), the layout in which
oneDNN's depthwise conv is fastest on CPU, and the layout the `cpu` scan reads with plain vector loads,
so the output stays channels-last. Padding both ends and keeping the first L outputs gives the causal
conv; the anti-causal (`reverse`) one mirrors the small weight and keeps the last L instead of flipping
the long input and output.

The backward is written out: oneDNN's depthwise backward is slow on CPU, while the input gradient is the
same conv in the other direction and the weight gradient is W shifted dot products (faster forward +
backward at MMA-T's training shape: docs/benchmarks.md, "Causal conv1d backward", bench_conv.py).
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
    y = _CausalConv1d.apply(x, weight, bias, reverse)
    # Without autograd the conv's fresh output can take the SiLU in place: one pass, no second buffer.
    return F.silu(y, inplace=not torch.is_grad_enabled()) if activation == "silu" else y


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool) -> Tensor:
    """The conv itself, in x's dtype (the fp32 weight follows bf16/fp16 activations, as under autocast)."""
    channels, width = weight.shape
    length = x.shape[-1]
    if reverse:
        weight = weight.flip(1)
    image = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # no copy for channels-last views
    y = F.conv2d(
        image,
        weight[:, None, None, :].to(x.dtype),
        bias.to(x.dtype) if bias is not None else None,
        padding=(0, width - 1),
        groups=channels,
    )
    return (y[..., width - 1 :] if reverse else y[..., :length]).squeeze(2)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.reverse = reverse
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return _conv(x, weight, bias, reverse)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias, _ = ctx.needs_input_grad
        grad = grad.to(x.dtype)
        # y = conv(x) in one direction, so dL/dx is the same weight run in the other direction.
        grad_x = _conv(grad, weight, None, not ctx.reverse) if need_x else None
        grad_weight = (
            _weight_grad(x, grad, weight.shape[1], ctx.reverse).to(weight.dtype) if need_weight else None
        )
        grad_bias = grad.sum((0, 2), dtype=torch.float32).to(ctx.bias_dtype) if need_bias else None
        return grad_x, grad_weight, grad_bias, None


def _weight_grad(x: Tensor, grad: Tensor, width: int, reverse: bool) -> Tensor:
    """dL/dweight[:, k] = sum over batch and t of grad_t * x_{t-s} (causal) or x_{t+s} (reverse), s = W-1-k.

    Products and sums in float32 at least, so bf16 activations lose nothing beyond their own rounding.
    """
    length = x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)
    taps = []
    for k in range(width):
        shift = min(width - 1 - k, length)
        if reverse:
            grad_part, x_part = grad[..., : length - shift], x[..., shift:]
        else:
            grad_part, x_part = grad[..., shift:], x[..., : length - shift]
        taps.append((grad_part.to(dtype) * x_part.to(dtype)).sum((0, 2)))
    return torch.stack(taps, dim=1)
