"""`mma eval`: PSNR/SSIM of a model (or the bicubic baseline) on benchmark folders, as papers report them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mma.cli.app import command
from mma.errors import ConfigError, MMAError
from mma.fileio import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from mma.evaluate import DatasetResult, ImageScore, Upscaler

BICUBIC = "bicubic"
DATA_HINT = "mma-sr ships no benchmark images: docs/evaluation.md says where Set5 and Set14 come from"


def _model_upscaler(model: str, scale: int, tile: int, device: str, threads: str | None) -> Upscaler:
    """The paper-protocol engine's upscaler: float32 (the half-precision default of `upscale` on GPUs would
    cost PSNR that papers do not lose), whole images unless --tile is given."""
    from mma.api import load_model
    from mma.engine import paper_engine

    return paper_engine(
        load_model(model, scale, device=device, dtype="fp32"),
        scale=scale,
        device=device,
        tile=tile,
        threads=threads,
    ).upscale_array


def _write_json(path: Path, payload: dict) -> None:
    """Never a half-written report."""
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), make_parents=True)


@command(
    "eval", help="Score a model (or bicubic) on dataset folders: PSNR/SSIM on Y, crop = scale, as in papers."
)
def eval_command(
    datasets: Annotated[
        list[Path], typer.Argument(help="Dataset folders of HR images (an HR subfolder is used if present).")
    ],
    scale: Annotated[
        int, typer.Option("--scale", "-s", help="Upscaling factor (LR = MATLAB bicubic of HR).")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Registry name, weights file, or 'bicubic'.")
    ] = "mma-t",
    tile: Annotated[
        int, typer.Option("--tile", min=0, help="Tile size in LR pixels; 0 = whole image (as the paper).")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    threads: Annotated[
        str | None, typer.Option("--threads", help="CPU threads (default: one per idle CPU).")
    ] = None,
    save_images: Annotated[
        Path | None, typer.Option("--save-images", help="Write SR images to DIR/<dataset>/<name>.png.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the scores to this JSON file.")
    ] = None,
) -> None:
    from tqdm import tqdm

    from mma.evaluate import dataset_name, evaluate_images

    if scale < 1:
        raise ConfigError(
            f"--scale {scale}: the factor the HR images are reduced and enlarged by; use 2, 3 or 4"
        )
    names = [dataset_name(path) for path in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"two dataset folders have the same name ({', '.join(names)}); results would collide"
        )
    from mma.cli.shards import gather, on_main, processes, share, threads_for, together

    with processes(device) as placement:  # alone, or one of the processes torchrun started
        upscaler = (
            None
            if model == BICUBIC
            else together(
                lambda: _model_upscaler(
                    model, scale, tile, placement.device, threads_for(threads, placement)
                ),
                placement,
            )
        )
        listed = on_main(lambda: _listed(datasets), placement)
        scored = []
        for path, images in listed:
            mine = share(images, placement)
            try:
                with tqdm(
                    total=len(mine),
                    desc=dataset_name(path),
                    unit="img",
                    file=sys.stderr,
                    disable=not (placement.main and sys.stderr.isatty()),
                    leave=False,
                ) as bar:
                    part = evaluate_images(
                        dataset_name(path),
                        mine,
                        scale,
                        upscaler,
                        save_dir=save_images,
                        progress=lambda _: bar.update(),
                    )
                scored.append(part.images)
            except MMAError as exc:  # printed here: this process is the only one that read the file
                typer.echo(f"error: {exc}", err=True)
                scored.append(None)
        parts = gather(scored, placement)
    results = _merged(listed, parts, scale)
    failed = len(results) < len(datasets)
    if not placement.main:
        if failed:
            raise typer.Exit(1)
        return
    if results:
        width = max(len("dataset"), *(len(result.name) for result in results))
        typer.echo(f"{'dataset':<{width}}  images     PSNR    SSIM  seconds")
        for result in results:
            typer.echo(
                f"{result.name:<{width}}  {len(result.images):>6}  {result.psnr:7.3f}  {result.ssim:.4f}"
                f"  {result.seconds:7.2f}"
            )
    if json_path is not None and results:
        scores = {r.name: {"images": len(r.images), "psnr": r.psnr, "ssim": r.ssim} for r in results}
        _write_json(json_path, {"scale": scale, "model": model, "datasets": scores})
    if failed:
        raise typer.Exit(1)


def _merged(
    listed: list[tuple[Path, list[Path]]], parts: list[list[tuple[ImageScore, ...] | None]], scale: int
) -> list[DatasetResult]:
    """Each dataset's scores from every process's share, in the folder's order, so the means are exactly
    those of one process; a dataset that failed in any process is left out (its error is printed already)."""
    from mma.evaluate import DatasetResult, dataset_name

    results = []
    for index, (path, images) in enumerate(listed):
        shares = [scores[index] for scores in parts]
        if all(part is not None for part in shares):
            ordered = [shares[i % len(shares)][i // len(shares)] for i in range(len(images))]  # type: ignore[index]
            results.append(DatasetResult(dataset_name(path), scale, tuple(ordered)))
    return results


def _listed(datasets: list[Path]) -> list[tuple[Path, list[Path]]]:
    """Each dataset folder with its HR images; one that cannot be read is reported (once) and left out."""
    from mma.evaluate import find_images

    listed = []
    for path in datasets:
        try:
            listed.append((path, find_images(path)))
        except MMAError as exc:
            hint = "" if path.exists() else f" ({DATA_HINT})"
            typer.echo(f"error: {exc}{hint}", err=True)
    return listed
