"""`mma compare`: bicubic beside each model on one image, zoomed where they differ, as one picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command
from mma.errors import ConfigError, OutputError


def parse_crop(text: str | None) -> tuple[int, int, int] | None:
    """`X,Y,SIZE` in output pixels, or None; ConfigError saying what is wrong with it otherwise."""
    if text is None:
        return None
    fields = [field.strip() for field in text.split(",")]
    if len(fields) != 3 or not all(field.isdigit() for field in fields):
        raise ConfigError(f"--crop {text}: use X,Y,SIZE (output pixels, e.g. 120,80,64)")
    x, y, size = (int(field) for field in fields)
    if size < 1:
        raise ConfigError(f"--crop {text}: SIZE must be at least 1")
    return x, y, size


def checked_output(image: Path, output: Path | None, force: bool) -> Path:
    """Where the figure goes (default `<image>_compare.png` here), refused before any work if it would
    replace the input, or an existing file without --force."""
    from mma.api import format_for
    from mma.fileio import check_writable

    target = output or Path(f"{image.stem}_compare.png")
    format_for(target)
    if target.exists() and image.exists() and target.resolve() == image.resolve():
        raise OutputError(f"{target}: is the input image; choose another --output")
    if target.exists() and not force:
        raise OutputError(f"{target}: exists (use --force to replace it)")
    check_writable(target)
    return target


@command("compare", help="Bicubic beside each model on one image, zoomed where they differ most.")
def compare_command(
    image: Annotated[Path, typer.Argument(help="Any image the CLI reads (the HR truth with --hr).")],
    scale: Annotated[
        int | None,
        typer.Option("--scale", "-s", help="2, 3 or 4. Default: the models' own, 4 for named models."),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model to show (repeat for several); 'bicubic' alone: none."),
    ] = None,
    crop: Annotated[
        str | None,
        typer.Option(
            "--crop", help="Zoom window X,Y,SIZE in output pixels. Default: where results differ most."
        ),
    ] = None,
    hr: Annotated[
        bool,
        typer.Option("--hr", help="IMAGE is the truth: reduce it first, score each result (PSNR/SSIM on Y)."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Figure file (default <image>_compare.png here).")
    ] = None,
    width: Annotated[int, typer.Option("--width", min=200, help="Width of each column in pixels.")] = 320,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing figure.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    threads: Annotated[str | None, typer.Option("--threads", help="CPU threads.")] = None,
) -> None:
    from mma.api import write_image
    from mma.report.compare import DEFAULT_MODELS, compare_image
    from mma.report.regions import Crop

    window = parse_crop(crop)
    target = checked_output(image, output, force)
    if scale is not None and scale < 2:
        raise ConfigError(f"--scale {scale}: the factor to enlarge by; use 2, 3 or 4")
    figure = compare_image(
        image,
        scale,
        list(dict.fromkeys(models or DEFAULT_MODELS)),
        hr=hr,
        crop=Crop(*window) if window else None,
        column=width,
        device=device,
        threads=threads,
    )
    write_image(figure.image, target, overwrite=force)
    x, y, size = figure.crop
    typer.echo(f"{target} ({figure.image.width}x{figure.image.height}, zoom {size}x{size} at {x},{y})")
