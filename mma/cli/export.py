"""`mma export`: the network as an ONNX graph, checked in ONNX Runtime against PyTorch before it is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command
from mma.errors import ConfigError

TOLERANCE = 1e-3  # largest ONNX Runtime vs PyTorch difference accepted, on images in [0, 1]


@command("export", help="Write an MMA model as an ONNX graph and check it in ONNX Runtime against PyTorch.")
def export(
    onnx: Annotated[Path, typer.Option("--onnx", help="The .onnx file to write.", show_default=False)],
    model: Annotated[
        str, typer.Option("--model", "-m", help="mma-t, mma-b, a weights file, or a Hub repo id.")
    ] = "mma-t",
    scale: Annotated[
        int | None,
        typer.Option(
            "--scale", "-s", help="2, 3 or 4. Default: the model file's own scale, 4 for a named model."
        ),
    ] = None,
    tile: Annotated[
        int,
        typer.Option(
            help="Input size (pixels) the graph is traced at; with --static the only size it accepts."
        ),
    ] = 64,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic/--static", help="Free batch, height and width, or a fixed (1, 3, tile, tile) input."
        ),
    ] = True,
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset version (17 or newer; 18 with dynamo).")
    ] = None,
    exporter: Annotated[
        str,
        typer.Option(
            help="torchscript (torch's tracer) or dynamo (torch.export: ten times slower; needs onnxscript)."
        ),
    ] = "torchscript",
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Run the graph in ONNX Runtime and compare it with PyTorch."),
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE when it exists.")] = False,
) -> None:
    import torch

    from mma.api import load_model
    from mma.export.onnx import DEFAULT_OPSET, MIN_OPSET, check_onnx_images, export_onnx
    from mma.progress import Meter

    if onnx.exists() and not force:
        raise ConfigError(f"{onnx}: exists (use --force to replace it)")
    net = load_model(model, scale, device="cpu", dtype="fp32")
    opset = opset or max(DEFAULT_OPSET, MIN_OPSET.get(exporter, DEFAULT_OPSET))
    sizes = [(tile, tile)] + ([(tile + 3, max(tile - 5, 2))] if dynamic else [])
    with Meter("export") as meter:  # minutes of tracing with nothing to count: elapsed time and the stage
        meter.stage(f"tracing with the {exporter} exporter")
        export_onnx(net, onnx, tile, dynamic=dynamic, opset=opset, exporter=exporter, overwrite=force)
        if check:
            meter.stage("checking in ONNX Runtime")
            generator = torch.Generator().manual_seed(0)
            images = [torch.rand(1, 3, height, width, generator=generator) for height, width in sizes]
            differences = check_onnx_images(net, onnx, images)
    shape = "batch, height and width free" if dynamic else f"input (1, 3, {tile}, {tile})"
    typer.echo(f"wrote {onnx}: {model} x{net.scale}, {shape}, opset {opset} ({exporter} exporter)")
    if not check:
        return
    for (height, width), difference in zip(sizes, differences):
        typer.echo(f"ONNX Runtime vs PyTorch on a {height}x{width} input: max difference {difference:.1e}")
        if not difference <= TOLERANCE:  # also catches NaN
            raise ConfigError(
                f"{onnx}: ONNX Runtime differs from PyTorch by {difference:.1e} "
                f"(more than {TOLERANCE:g}) on a {height}x{width} input"
            )
