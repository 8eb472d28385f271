"""The `mamba-ssm` backend (formerly called `cuda`): mamba-ssm's fused scan and causal-conv1d's kernel, imported only when used.

Neither package is a hard dependency (`pip install mma-sr[cuda]`), so every import happens inside a
function and a missing or broken install shows up as a reason string, never as an ImportError on
`import mma`. Their kernels have no reverse mode: reverse = flip inputs, run, flip the output.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

from mma.runtime import absent_reason, assumed_absent


@cache
def _load() -> tuple[Callable | None, Callable | None, str | None]:
    """(selective_scan_fn, causal_conv1d_fn or None, reason the backend cannot run or None)."""
    if not torch.cuda.is_available():
        return (
            None,
            None,
            (
                "no CUDA device is available to PyTorch (it needs an NVIDIA GPU, a CUDA build of torch and "
                "`pip install mma-sr[cuda]`)"
            ),
        )
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # noqa: BLE001  (a broken build raises more than ImportError)
        return None, None, f"mamba-ssm does not import ({exc}); install it with `pip install mma-sr[cuda]`"
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # noqa: BLE001
        causal_conv1d_fn = None  # optional: the torch conv is used instead
    return selective_scan_fn, causal_conv1d_fn, None


def unavailable_reason() -> str | None:
    """None when the backend can run here (and $MMA_ASSUME_ABSENT does not name mamba-ssm), else why not."""
    if assumed_absent("mamba-ssm"):
        return absent_reason("mamba-ssm")
    return _load()[2]


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
    """mamba-ssm's selective_scan_fn (same contract as `mma.ops.selective_scan`)."""
    scan_fn = _load()[0]
    if reverse:
        u, delta, B, C = (t.flip(-1) for t in (u, delta, B, C))
        z = z.flip(-1) if z is not None else None
    y = scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return y.flip(-1) if reverse else y


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    reverse: bool = False,
) -> Tensor:
    """causal-conv1d's kernel when it imports, else the shared torch implementation."""
    conv_fn = _load()[1]
    if conv_fn is None:
        from mma.ops.conv import causal_conv1d as torch_conv

        return torch_conv(x, weight, bias, activation, reverse=reverse)
    if reverse:
        return conv_fn(x.flip(-1), weight, bias, activation).flip(-1)
    return conv_fn(x, weight, bias, activation)
