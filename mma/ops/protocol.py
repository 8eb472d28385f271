"""The two signatures every scan backend implements, written once.

Each backend module (`scan_cpu` for numba, `scan_triton`, `scan_torch`, `cuda` for mamba-ssm,
`scan_export`) defines functions of these shapes; `mma.ops.dispatch` holds them as these Protocols, and
tests/test_ops.py checks every registered function against them, so a backend whose arguments drift is caught
before a caller passes them by position into the wrong slot.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class SelectiveScan(Protocol):
    """Selective scan, shapes as mamba-ssm's selective_scan_fn; see `mma.ops.reference` for the maths.

    u, delta, z: (batch, Dch, L); A: (Dch, N); B, C: (batch, N, L); D, delta_bias: (Dch,). reverse=True
    scans from the last token to the first.
    """

    def __call__(
        self,
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
    ) -> Tensor: ...


class CausalConv1d(Protocol):
    """Depthwise causal conv1d: x (batch, Dch, L), weight (Dch, W), left zero padding W-1; reverse=True is
    the anti-causal version."""

    def __call__(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        activation: str | None = None,
        *,
        reverse: bool = False,
    ) -> Tensor: ...
