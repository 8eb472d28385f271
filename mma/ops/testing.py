"""Random selective-scan inputs, for the tests that check every backend against the reference and for the
benchmarks that time them: one definition, so both see the layouts the network really passes.

The network hands the scan transposed views of channels-last (batch, L, D) buffers, so `u`, `delta`, `z`, `B`
and `C` come out as non-contiguous (batch, D, L) / (batch, N, L) views, as there; `A` is negative (a decay),
`delta_bias` small.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scan_inputs(
    batch: int = 2,
    channels: int = 20,
    length: int = 50,
    nstate: int = 16,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    delta_scale: float = 1.0,
    a_scale: float = 1.0,
    grad: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Keyword arguments of `mma.ops.selective_scan` (without `delta_softplus`), drawn from one seeded
    generator; `delta_scale`/`a_scale` stretch delta and A toward the extremes, `grad` makes every tensor a
    leaf that requires grad."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = rand(batch, length, channels).transpose(1, 2)
    delta = (rand(batch, length, channels) * delta_scale).transpose(1, 2)
    z = rand(batch, length, channels).transpose(1, 2)
    bc = rand(batch, length, 2 * nstate)
    B, C = bc[..., :nstate].transpose(1, 2), bc[..., nstate:].transpose(1, 2)
    A = -torch.exp(rand(channels, nstate)) * a_scale
    D, delta_bias = rand(channels), rand(channels) * 0.5
    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    if device != "cpu":
        tensors = {key: value.to(device) for key, value in tensors.items()}
    if grad:
        tensors = {key: value.detach().clone().requires_grad_(True) for key, value in tensors.items()}
    return tensors
