"""The signatures every scan backend implements, written once.

Each backend module (`scan_cpu` for numba, `scan_triton`, `scan_torch`, `cuda` for mamba-ssm,
`scan_export`) defines functions of the first two shapes (a backend that runs two scans at once, numba, also
the pair's); `mma.ops.dispatch` holds them as these Protocols, and
tests/test_ops.py checks every registered function against them, so a backend whose arguments drift is caught
before a caller passes them by position into the wrong slot.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor


class ScanArgs(NamedTuple):
    """The arguments of one selective scan, for the functions that take several scans at once."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor | None = None
    z: Tensor | None = None
    delta_bias: Tensor | None = None
    delta_softplus: bool = False
    reverse: bool = False


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


class SelectiveScanPair(Protocol):
    """Two independent selective scans (the two directions of a bidirectional layer), outputs in order."""

    def __call__(self, first: ScanArgs, second: ScanArgs) -> tuple[Tensor, Tensor]: ...
