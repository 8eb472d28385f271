"""`mma pack`: a training set as one file (decoded images, or lossless WebP for travel) for `mma train --data`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command
from mma.errors import OutputError


@command(
    "pack",
    help="Pack the HR images of training folders into one .safetensors file that `mma train --data` reads "
    "like the folders (same images, same order, same samples).",
)
def pack(
    out: Annotated[Path, typer.Argument(help="The .safetensors file to write.", show_default=False)],
    folders: Annotated[
        list[Path], typer.Argument(help="HR image folders, in training order.", show_default=False)
    ],
    encoding: Annotated[
        str,
        typer.Option(
            "--encoding", help="raw (decoded pixels, read without decoding) or webp (lossless, smaller)."
        ),
    ] = "raw",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT when it exists.")] = False,
) -> None:
    from tqdm import tqdm

    from mma.train.packed import pack_images

    if out.exists() and not force:
        raise OutputError(f"{out}: exists (use --force to replace it)")
    bar = tqdm(desc="packing", unit="img", dynamic_ncols=True)

    def report(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        written = pack_images(folders, out, encoding, progress=report)
    finally:
        bar.close()
    typer.echo(f"packed {bar.n} images into {written} ({written.stat().st_size / 2**20:.1f} MiB, {encoding})")
