"""What this machine can run: devices, scan backends, and a smoke run of a small MMA-T on each backend.

Kept out of the CLI so a notebook or a bug report can call it too (`mma doctor` prints it).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from mma.model import build_model
from mma.ops import available_backends
from mma.ops.dispatch import DEVICE_TYPES


@dataclass(frozen=True)
class BackendCheck:
    """One scan backend: None for `reason` when it ran, with the largest difference to the first that ran."""

    name: str
    reason: str | None
    finite: bool = True
    output_shape: tuple[int, ...] = ()
    max_difference: float = 0.0


def versions() -> str:
    from mma import __version__

    return f"mma-sr {__version__}, torch {torch.__version__}, Python {platform.python_version()}"


def devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_backends() -> list[BackendCheck]:
    """Run a two-block MMA-T x2 on a 24x20 input through every backend that is available here."""
    model = build_model("mma-t", 2, num_block=2).eval()
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    reference = None
    checks = []
    for name, reason in available_backends().items():
        if reason is not None:
            checks.append(BackendCheck(name, reason))
            continue
        device = DEVICE_TYPES.get(name, "cpu")
        with torch.no_grad():
            out = model.to(device).set_scan_backend(name)(image.to(device)).cpu()
        finite = bool(torch.isfinite(out).all())
        reference = out if reference is None and finite else reference
        difference = float((out - reference).abs().max()) if finite else float("nan")
        checks.append(BackendCheck(name, None, finite, tuple(out.shape[-2:]), difference))
    return checks
