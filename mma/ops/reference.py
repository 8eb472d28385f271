"""Slow float64 sequential reference implementations of the scan and the causal conv1d.

They are the ground truth for the tests: written as literally as the maths reads (one Python step per
token, `reverse` by flipping), so that they share no tricks with the fast backends they check.
Differentiable, so gradients of the fast backends can be checked against autograd through them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    reverse: bool = False,
) -> Tensor:
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t ; y_t = <C_t, h_t> + D u_t ; y *= SiLU(z).

    Shapes as mamba-ssm: u, delta, z (batch, Dch, L); A (Dch, N); B, C (batch, N, L); D, delta_bias (Dch,).
    Computed in float64, returned in u's dtype.
    """
    if reverse:
        flip = _flip_last
        out = selective_scan(
            flip(u),
            flip(delta),
            A,
            flip(B),
            flip(C),
            D,
            flip(z) if z is not None else None,
            delta_bias,
            delta_softplus,
        )
        return flip(out)
    dtype = u.dtype
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, channels, _ = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    # unbind once: indexing inside the loop would make autograd's backward quadratic in L
    for u_t, delta_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        decay = torch.exp(delta_t[:, :, None] * A)
        h = decay * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y.to(dtype)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    reverse: bool = False,
) -> Tensor:
    """y_t = bias + sum_k weight[:, k] x_{t - (W-1) + k} with zeros before t=0, then optional SiLU."""
    if reverse:
        return _flip_last(causal_conv1d(_flip_last(x), weight, bias, activation))
    dtype = x.dtype
    x, weight = x.double(), weight.double()
    width = weight.shape[1]
    length = x.shape[-1]
    padded = F.pad(x, (width - 1, 0))
    y = sum(weight[:, k, None] * padded[..., k : k + length] for k in range(width))
    if bias is not None:
        y = y + bias.double()[:, None]
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise ValueError(f"unknown activation {activation!r}")
    return y.to(dtype)


def _flip_last(t: Tensor) -> Tensor:
    return torch.flip(t, dims=(-1,))
