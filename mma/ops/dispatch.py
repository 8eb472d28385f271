"""Choose a scan/conv backend per call: argument, else `MMA_SCAN_BACKEND`, else the best that runs here.

Backends are named by what implements them: "numba" (numba-compiled CPU kernels), "triton" (our Triton
scan, CUDA tensors), "torch" (pure PyTorch, any device), "mamba-ssm" (mamba-ssm + causal-conv1d kernels,
CUDA tensors), "export" (pure PyTorch with the same ops for every length, which ONNX exporters can trace;
any device, never chosen automatically). The older names "cpu" (= numba) and "cuda" (= mamba-ssm) still
work, with a DeprecationWarning. Optional backends are probed lazily, so a missing package is a reason
string in `available_backends()`, and only an explicit request for it raises `BackendUnavailableError`.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from mma.errors import BackendUnavailableError, ConfigError
from mma.ops import conv, cuda, scan_cpu, scan_export, scan_torch, scan_triton
from mma.ops.protocol import CausalConv1d, ScanArgs, SelectiveScan, SelectiveScanPair

ENV_VAR = "MMA_SCAN_BACKEND"
BACKENDS = ("numba", "torch", "mamba-ssm", "triton", "export")
# Names of earlier releases, which said where a backend runs rather than what it is.
DEPRECATED_ALIASES = {"cpu": "numba", "cuda": "mamba-ssm"}
DEVICE_TYPES = {"numba": "cpu", "mamba-ssm": "cuda", "triton": "cuda"}  # the device each compiled one runs on
# What each device prefers, best first, when no backend is asked for; "torch" runs where none of these can.
PREFERRED = {"cpu": ("numba",), "cuda": ("mamba-ssm", "triton")}


def available_backends() -> dict[str, str | None]:
    """Backend name -> None when it can run on this machine, else the reason it cannot."""
    return {
        "numba": scan_cpu.unavailable_reason(),
        "torch": None,
        "mamba-ssm": cuda.unavailable_reason(),
        "triton": scan_triton.unavailable_reason(),
        "export": None,
    }


def canonical_name(name: str, source: str = "backend argument") -> str:
    """The backend's current name: an old alias is translated, with a DeprecationWarning naming the new one."""
    new = DEPRECATED_ALIASES.get(name)
    if new is None:
        return name
    warnings.warn(
        f"scan backend {name!r} ({source}) is now called {new!r}; the old name will be removed",
        DeprecationWarning,
        stacklevel=4,
    )
    return new


def resolve_backend(name: str | None, device: torch.device | str) -> str:
    """The backend to use for tensors on `device`: `name`, else $MMA_SCAN_BACKEND, else automatic.

    Automatic: on CUDA "mamba-ssm" when it imports, else "triton" when triton does; on CPU "numba" when
    numba works; else "torch".
    """
    device = torch.device(device)
    source = "backend argument"
    if name is None or name == "auto":
        name, source = os.environ.get(ENV_VAR, "").strip().lower() or None, ENV_VAR
    if name is None or name == "auto":
        return _automatic(device)
    name = canonical_name(name, source)
    if name not in BACKENDS:
        raise ConfigError(
            f"unknown scan backend {name!r} ({source}); choose one of {', '.join(BACKENDS)} or auto"
        )
    reason = available_backends()[name]
    if reason is None and name in DEVICE_TYPES and device.type != DEVICE_TYPES[name]:
        reason = f"it runs on {DEVICE_TYPES[name].upper()} tensors only, these are on {device}"
    if reason is not None:
        raise BackendUnavailableError(f"scan backend {name!r} is unavailable: {reason}")
    return name


def _automatic(device: torch.device) -> str:
    reasons = available_backends()
    return next((name for name in PREFERRED.get(device.type, ()) if reasons[name] is None), "torch")


SCANS: dict[str, SelectiveScan] = {
    "numba": scan_cpu.selective_scan,
    "torch": scan_torch.selective_scan,
    "mamba-ssm": cuda.selective_scan,
    "triton": scan_triton.selective_scan,
    "export": scan_export.selective_scan,
}
# Backends that run two scans at once better than one after the other; the others take them in turn.
PAIRS: dict[str, SelectiveScanPair] = {"numba": scan_cpu.selective_scan_pair}
CONVS: dict[str, CausalConv1d] = {
    "numba": conv.causal_conv1d,
    "torch": conv.causal_conv1d,
    "mamba-ssm": cuda.causal_conv1d,
    "triton": conv.causal_conv1d,
    "export": scan_export.causal_conv1d,
}


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
    backend: str | None = None,
) -> Tensor:
    """Selective scan, shapes as mamba-ssm's selective_scan_fn; see `mma.ops.reference` for the maths.

    u, delta, z: (batch, Dch, L); A: (Dch, N); B, C: (batch, N, L); D, delta_bias: (Dch,).
    reverse=True scans from the last token to the first. Differentiable w.r.t. every tensor input.
    """
    scan = SCANS[resolve_backend(backend, u.device)]
    return scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=reverse)


def selective_scan_pair(
    first: ScanArgs, second: ScanArgs, *, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """Two independent scans, e.g. the two directions of a bidirectional layer: `selective_scan` of each.

    Why a pair: on a CPU one scan of 96 channels splits into 32-channel blocks over the threads unevenly (3
    blocks on 2 threads), while two scans side by side give each thread its share (docs/benchmarks.md,
    "CPU pace"). Backends without a pair form run the two in turn.
    """
    name = resolve_backend(backend, first.u.device)
    pair = PAIRS.get(name)
    if pair is not None:
        return pair(first, second)
    scan = SCANS[name]
    return scan(*first[:9], reverse=first.reverse), scan(*second[:9], reverse=second.reverse)


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    *,
    reverse: bool = False,
    backend: str | None = None,
) -> Tensor:
    """Depthwise causal conv1d: x (batch, Dch, L), weight (Dch, W), left zero padding W-1.

    reverse=True gives the anti-causal version (as if x and the output were flipped along L).
    """
    return CONVS[resolve_backend(backend, x.device)](x, weight, bias, activation, reverse=reverse)
