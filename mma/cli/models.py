"""`mma models`, `mma download` and `mma convert`: which weights exist, fetching them, converting the authors'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command

BENCHMARKS = ("Set5", "Set14")  # the columns of `mma models`, as the bundled scores name them


@command(
    "models",
    help="List the models: scales, parameter counts, measured quality (PSNR), where the "
    "weights come from, whether offline.",
)
def models() -> None:
    from mma.api import list_models

    typer.echo(
        f"{'model':8s} {'scale':>5s} {'parameters':>12s}  {'offline':7s}  {'Set5':>5s}  {'Set14':>5s}  "
        "weights"
    )
    for info in list_models():
        offline = "yes" if info.offline else "no"
        psnr = [f"{info.scores[name]['psnr']:.2f}" if name in info.scores else "-" for name in BENCHMARKS]
        typer.echo(
            f"{info.variant:8s} {'x' + str(info.scale):>5s} {info.parameters:>12,}  {offline:7s}  "
            f"{psnr[0]:>5s}  {psnr[1]:>5s}  {info.source}"
        )
    typer.echo(
        "Set5, Set14: PSNR (dB, Y channel) of the bundled weights, measured when they were bundled with the "
        "`mma eval` protocol (docs/evaluation.md)."
    )


@command("download", help="Fetch a model's weights into the local cache now, so later runs work offline.")
def download(
    name: Annotated[
        str,
        typer.Argument(help="mma-t, mma-b, or a Hub repository id owner/name[@revision] (or hf-hub:...)."),
    ],
    scale: Annotated[int, typer.Option("--scale", "-s", help="Scale of the registry model (2, 3 or 4).")] = 4,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even when the file is cached.")
    ] = False,
) -> None:
    from mma.weights.loaded import resolve_weights

    typer.echo(str(resolve_weights(name, scale, force=force)))


@command(
    "convert",
    help="Convert a checkpoint (the authors' BasicSR .pth, for one) to safetensors with "
    "metadata; variant and scale are read from the tensor shapes.",
)
def convert(
    source: Annotated[Path, typer.Argument(help="The checkpoint to read (.pth or .safetensors).")],
    output: Annotated[Path, typer.Argument(help="The .safetensors file to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT when it exists.")] = False,
) -> None:
    from mma.weights.checkpoint import describe
    from mma.weights.convert import convert_checkpoint

    config = convert_checkpoint(source, output, overwrite=force)
    typer.echo(f"wrote {output}: {describe(config)}")
