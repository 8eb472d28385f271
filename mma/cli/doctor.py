"""`mma doctor`: what this machine can run, and a smoke run of the network on every working backend."""

from __future__ import annotations

import platform

import torch
import typer

from mma.cli.app import command


def _devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@command("doctor", help="Show versions, devices and scan backends, and smoke-test a small MMA-T on each backend.")
def doctor() -> None:
    from mma import __version__
    from mma.model import build_model
    from mma.ops import available_backends
    from mma.ops.dispatch import DEVICE_TYPES

    typer.echo(f"mma-sr {__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    typer.echo(f"devices: {', '.join(_devices())}")
    backends = available_backends()
    model = build_model("mma-t", 2, num_block=2).eval()
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    reference = None
    for name, reason in backends.items():
        if reason is not None:
            typer.echo(f"scan backend {name:6s}: unavailable ({reason})")
            continue
        device = DEVICE_TYPES.get(name, "cpu")
        with torch.no_grad():
            out = model.to(device).set_scan_backend(name)(image.to(device)).cpu()
        if not torch.isfinite(out).all():
            typer.echo(f"scan backend {name:6s}: BROKEN (non-finite output)")
            raise typer.Exit(1)
        reference = out if reference is None else reference
        typer.echo(f"scan backend {name:6s}: ok (MMA-T x2 smoke run {tuple(image.shape[-2:])} -> "
                   f"{tuple(out.shape[-2:])}, max diff to first backend {(out - reference).abs().max():.1e})")
