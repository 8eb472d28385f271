"""`mma lam`: the local attribution map of one output window, as two PNGs and the diffusion index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mma.cli.app import command
from mma.errors import OutputError

# A path integral off by more than this share of the detector change is too coarse to trust.
_GAP_WARNING = 0.1


def _outputs(image: Path, output: Path | None, force: bool) -> tuple[Path, Path]:
    """Heatmap and overlay paths (`<out>` and `<out stem>_overlay<suffix>`), checked before any work."""
    from mma.api import format_for

    heatmap = output or Path(f"{image.stem}_lam.png")
    overlay = heatmap.with_name(f"{heatmap.stem}_overlay{heatmap.suffix}")
    format_for(heatmap)
    for path in (heatmap, overlay):
        if path.exists() and path.resolve() == image.resolve():
            raise OutputError(f"{path}: is the input image; choose another output name")
        if path.exists() and not force:
            raise OutputError(f"{path}: exists (use --force to replace it)")
    return heatmap, overlay


@command("lam", help="Local attribution map of an output window (Gu & Dong 2021): heatmap, overlay and DI.")
def lam_command(
    image: Annotated[Path, typer.Argument(help="Input image (the LR input, or HR with --downscale).")],
    x: Annotated[int, typer.Option("--x", min=0, help="Left column of the window, in output pixels.")],
    y: Annotated[int, typer.Option("--y", min=0, help="Top row of the window, in output pixels.")],
    window: Annotated[int, typer.Option("--window", "-w", min=2, help="Window side in output pixels.")] = 16,
    scale: Annotated[
        int | None,
        typer.Option("--scale", "-s", help="Scale of a named model (4 if not given); files know theirs."),
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Registry name or weights file.")] = "mma-t",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Points on the blur path (LAM: 50).")] = 50,
    sigma: Annotated[float, typer.Option("--sigma", min=0.0, help="Blur of the baseline (LAM: 1.2).")] = 1.2,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Path points per forward/backward.")] = 4,
    downscale: Annotated[
        bool, typer.Option("--downscale", help="IMAGE is HR: modcrop and MATLAB-bicubic shrink it first.")
    ] = False,
    crop: Annotated[
        int, typer.Option("--crop", min=0, help="Analyse only an NxN input crop around the window; 0 = all.")
    ] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Heatmap file (default <image>_lam.png here).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace existing outputs.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
) -> None:
    from PIL import Image

    from mma.api import load_model, read_image, write_image
    from mma.engine import Engine
    from mma.lam import analysis_input, heatmap_image, lam, overlay_image
    from mma.progress import Meter

    heatmap_path, overlay_path = _outputs(image, output, force)
    pixels = np.asarray(read_image(image).convert("RGB"))
    engine = Engine(load_model(model, scale, device=device, dtype="fp32"), device=device, dtype="fp32")
    network, factor = engine.network_for_gradients(), engine.scale
    analysed = analysis_input(pixels, x, y, window, factor, downscale=downscale, crop=crop)
    if analysed.origin is not None:
        top, left = analysed.origin
        height, width = analysed.lr.shape[:2]
        typer.echo(
            f"crop: {width}x{height} input pixels from ({left}, {top}); window at ({analysed.x}, {analysed.y})"
        )
    # A bar on a terminal, a line every few seconds in a log: each path step is a forward and a backward pass
    # over the whole analysed input (docs/lam.md, "Cost").
    with Meter("LAM", total=steps) as meter, engine.running():
        result = lam(
            network,
            analysed.lr,
            analysed.x,
            analysed.y,
            window,
            steps=steps,
            sigma=sigma,
            batch_size=batch,
            progress=lambda done, total: meter.set(done, total, note=f"{done}/{total} path steps"),
        )
    write_image(heatmap_image(result.attribution, zoom=result.scale), heatmap_path, overwrite=force)
    base = Image.fromarray(analysed.hr) if analysed.hr is not None else None
    write_image(overlay_image(result, base), overlay_path, overwrite=force)
    typer.echo(f"DI: {result.diffusion_index:.2f}")
    typer.echo(f"heatmap: {heatmap_path}")
    typer.echo(f"overlay: {overlay_path}")
    gain = result.detector_gain
    if abs(result.completeness_gap) > _GAP_WARNING * abs(gain):
        typer.echo(
            f"warning: the path integral misses the detector change ({gain:.4g}) by "
            f"{result.completeness_gap:.4g}; use more --steps",
            err=True,
        )
