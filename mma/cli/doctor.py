"""`mma doctor`: what this machine can run, and a smoke run of the network on every working backend."""

from __future__ import annotations

import typer

from mma.cli.app import command


@command(
    "doctor", help="Show versions, devices and scan backends, and smoke-test a small MMA-T on each backend."
)
def doctor() -> None:
    from mma import diagnostics

    typer.echo(diagnostics.versions())
    typer.echo(f"devices: {', '.join(diagnostics.devices())}")
    for check in diagnostics.check_backends():
        if check.reason is not None:
            typer.echo(f"scan backend {check.name:9s}: unavailable ({check.reason})")
        elif not check.finite:
            typer.echo(f"scan backend {check.name:9s}: BROKEN (non-finite output)")
            raise typer.Exit(1)
        else:
            typer.echo(
                f"scan backend {check.name:9s}: ok (MMA-T x2 smoke run (24, 20) -> {check.output_shape}, "
                f"max diff to first backend {check.max_difference:.1e})"
            )
