"""Sequence operators of the Mamba layer (selective scan, causal depthwise conv1d) with backends.

`mma.ops.reference` holds slow float64 versions used as ground truth by the tests.
"""

from mma.ops.dispatch import (
    available_backends,
    causal_conv1d,
    resolve_backend,
    selective_scan,
    selective_scan_pair,
)
from mma.ops.protocol import ScanArgs

__all__ = [
    "ScanArgs",
    "available_backends",
    "causal_conv1d",
    "resolve_backend",
    "selective_scan",
    "selective_scan_pair",
]
