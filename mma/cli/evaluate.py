"""`mma eval`: PSNR/SSIM of a model (or the bicubic baseline) on benchmark folders, as papers report them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mma.cli.app import command
from mma.errors import ConfigError, MMAError
from mma.fileio import atomic_write, check_writable

if TYPE_CHECKING:  # pragma: no cover
    from mma.evaluate import DatasetResult, ImageScore, Upscaler

    Run = tuple[str, list[DatasetResult]]  # a method as given to -m, and its datasets' scores

BICUBIC = "bicubic"
DEFAULT_MODEL = "mma-t"
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
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Registry name, weights file, or 'bicubic'; repeat to score several."
        ),
    ] = None,
    tile: Annotated[
        int, typer.Option("--tile", min=0, help="Tile size in LR pixels; 0 = whole image (as the paper).")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    threads: Annotated[
        str | None, typer.Option("--threads", help="CPU threads (default: one per idle CPU).")
    ] = None,
    save_images: Annotated[
        Path | None,
        typer.Option(
            "--save-images", help="Write SR images to DIR/<dataset>/<name>.png (DIR/<model>/... for several)."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the scores to this JSON file.")
    ] = None,
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="Write a self-contained HTML report (tables, gain plot, crops) here."),
    ] = None,
) -> None:
    from mma.evaluate import dataset_name

    if scale < 1:
        raise ConfigError(
            f"--scale {scale}: the factor the HR images are reduced and enlarged by; use 2, 3 or 4"
        )
    names = [dataset_name(path) for path in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"two dataset folders have the same name ({', '.join(names)}); results would collide"
        )
    for path in (json_path, report_path):
        if path is not None:
            check_writable(path)
    asked = list(dict.fromkeys(model or [DEFAULT_MODEL]))
    _check_labels(asked)
    # The report's gains are over bicubic: it is scored for the report even when not asked for.
    methods = [BICUBIC, *asked] if report_path is not None and BICUBIC not in asked else asked
    runs, crops, failed, main = _scored(
        datasets, scale, methods, asked, tile, device, threads, save_images, report_path
    )
    if not main:
        if failed:
            raise typer.Exit(1)
        return
    shown = [(method, results) for method, results in runs if method in asked]
    _print_table(shown)
    if json_path is not None and any(results for _, results in shown):
        _write_json(json_path, _payload(scale, shown))
    if report_path is not None and any(results for _, results in runs):
        _write_report(report_path, scale, runs, _payload(scale, shown), crops)
    if failed:
        raise typer.Exit(1)


def _scored(
    datasets: list[Path],
    scale: int,
    methods: list[str],
    asked: list[str],
    tile: int,
    device: str,
    threads: str | None,
    save_images: Path | None,
    report_path: Path | None,
) -> tuple[list[Run], dict, bool, bool]:
    """Every method on every dataset (each process its share of the images), the report's crops, whether
    any dataset failed, and whether this is the process that prints."""
    from mma.cli.shards import gather, on_main, processes, share, threads_for, together
    from mma.evaluate import dataset_name, evaluate_images
    from mma.progress import Meter
    from mma.report.compare import label_for
    from mma.report.crops import CropCollector, merged

    collector = CropCollector(scale) if report_path is not None else None
    reported: set[str] = set()  # an unreadable image is named once, not once per model
    with processes(device) as placement:  # alone, or one of the processes torchrun started
        upscalers = together(  # every model loaded before any is run: a bad name fails in seconds
            lambda: [
                None
                if method == BICUBIC
                else _model_upscaler(method, scale, tile, placement.device, threads_for(threads, placement))
                for method in methods
            ],
            placement,
        )
        listed = on_main(lambda: _listed(datasets), placement)
        runs: list[Run] = []
        for method, upscaler in zip(methods, upscalers):
            save_dir = None
            if save_images is not None and method in asked:
                save_dir = save_images if len(asked) == 1 else save_images / label_for(method)
            scored = []
            for path, images in listed:
                mine = share(images, placement)
                name = dataset_name(path)
                try:
                    with Meter(  # a bar on a terminal, a plain line now and then in a log
                        name if len(methods) == 1 else f"{label_for(method)} {name}",
                        total=len(mine),
                        unit="img",
                        disable=not placement.main,
                    ) as bar:
                        part = evaluate_images(
                            name,
                            mine,
                            scale,
                            upscaler,
                            save_dir=save_dir,
                            progress=lambda _: bar.set(bar.done + 1),
                            keep=collector.keeper(name, method) if collector is not None else None,
                        )
                    scored.append(part.images)
                except MMAError as exc:  # printed here: this process is the only one that read the file
                    if str(exc) not in reported:
                        reported.add(str(exc))
                        typer.echo(f"error: {exc}", err=True)
                    scored.append(None)
            runs.append((method, _merged(listed, gather(scored, placement), scale)))
        crops = merged(gather(collector.crops, placement)) if collector is not None else {}
    failed = any(len(results) < len(datasets) for _, results in runs)
    return runs, crops, failed, placement.main


def _check_labels(models: list[str]) -> None:
    """Two weights files of one name (in different folders) would share a table row name, a report column
    and a --save-images folder: refused before any work."""
    from mma.report.compare import label_for

    labels = [label_for(name) for name in models]
    twins = sorted({label for label in labels if labels.count(label) > 1})
    if twins:
        raise ConfigError(f"several -m models are named {', '.join(twins)}; give the files different names")


def _print_table(runs: list[Run]) -> None:
    """The means per dataset (and per model, when several were scored), as papers print them."""
    from mma.report.compare import label_for

    rows = [(label_for(method), result) for method, results in runs for result in results]
    if not rows:
        return
    several = len(runs) > 1
    width = max(len("dataset"), *(len(result.name) for _, result in rows))
    model_width = max(len("model"), *(len(label) for label, _ in rows))
    lead = f"{'model':<{model_width}}  " if several else ""
    typer.echo(f"{lead}{'dataset':<{width}}  images     PSNR    SSIM  seconds")
    for label, result in rows:
        lead = f"{label:<{model_width}}  " if several else ""
        typer.echo(
            f"{lead}{result.name:<{width}}  {len(result.images):>6}  {result.psnr:7.3f}  {result.ssim:.4f}"
            f"  {result.seconds:7.2f}"
        )


def _payload(scale: int, runs: list[Run]) -> dict:
    """The `--json` document: one model as `{"scale", "model", "datasets"}`; several as
    `{"scale", "models": {model: {"datasets"}}}`."""

    def scores(results: Sequence[DatasetResult]) -> dict:
        return {r.name: {"images": len(r.images), "psnr": r.psnr, "ssim": r.ssim} for r in results}

    if len(runs) == 1:
        method, results = runs[0]
        return {"scale": scale, "model": method, "datasets": scores(results)}
    return {"scale": scale, "models": {method: {"datasets": scores(results)} for method, results in runs}}


def _write_report(path: Path, scale: int, runs: list[Run], payload: dict, crops: dict) -> None:
    """The HTML report, written whole or not at all."""
    from mma.report.html import render_report

    text = render_report(scale, runs, payload, crops)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), make_parents=True)
    typer.echo(f"report: {path}")


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
