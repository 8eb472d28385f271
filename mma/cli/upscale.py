"""`mma upscale`: files, folders and globs in, upscaled images out, and never a lost file.

Every output is checked before any work starts (exists without --force, same as an input, a folder where
no file can be created), written atomically, and a bad file in a batch is reported on one line while the
rest go on; the batch ends with a summary, and the exit status is non-zero when anything failed. Under
torchrun the processes share the batch that rank 0 planned, and the summary is theirs together
(`mma.cli.shards`).
"""

from __future__ import annotations

import glob
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command
from mma.errors import ConfigError, ImageReadError, MMAError, OutputError

GLOB_CHARACTERS = frozenset("*?[")
# Words a user may type after a flag (`--force true`) that then arrive as input names.
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


@dataclass(frozen=True)
class Job:
    """One input image and the file its result goes to."""

    source: Path
    target: Path


@dataclass
class Tally:
    """What became of each input, for the summary line at the end of a batch."""

    done: int = 0
    skipped: int = 0
    failed: int = 0


@command("upscale", help="Upscale images and videos (files, folders or globs) with an MMA model.")
def upscale(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image or video files, folders of them, or glob patterns.",
            show_default=False,
            metavar="INPUT",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (one input) or folder (several; created if needed). "
            "Default: beside each input.",
        ),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(
            "--scale", "-s", help="2, 3 or 4. Default: the model file's own scale, 4 for a named model."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="mma-t, mma-b, a weights file, or a Hub repo id.")
    ] = "mma-t",
    tile: Annotated[
        str,
        typer.Option(help="Tile size in input pixels, 'auto' (fits --max-memory) or 0 (whole image)."),
    ] = "auto",
    overlap: Annotated[int, typer.Option(help="Overlap between tiles in input pixels.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.")] = "auto",
    suffix: Annotated[str | None, typer.Option(help="Added to each output name. Default: _x<scale>.")] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="png, jpg, webp or tiff. Default: the input's format when writable, else png."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace outputs that already exist.")] = False,
    skip_existing: Annotated[
        bool,
        typer.Option("--skip-existing", help="Leave outputs that already exist and go on (resumes a batch)."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
    alpha: Annotated[str, typer.Option(help="Transparency: 'resize' (bicubic) or 'model'.")] = "resize",
    batch: Annotated[
        str,
        typer.Option(help="Tiles per forward: 'auto' (as many as fit --max-memory, at most 16) or a number."),
    ] = "auto",
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Memory one forward may use, e.g. 512M or 4G. Default: half of free memory, at most 1G on a CPU."
        ),
    ] = None,
    threads: Annotated[str | None, typer.Option(help="CPU threads. Default: one per idle CPU.")] = None,
    codec: Annotated[
        str | None,
        typer.Option(help="Videos: encoder, e.g. h264, h265, ffv1 (lossless), vp9. Default: h264."),
    ] = None,
    crf: Annotated[
        int | None, typer.Option(help="Videos: quality of --codec, lower is better. Default: 18.")
    ] = None,
    frames: Annotated[
        str | None, typer.Option(help="Videos: only frames START:END (END excluded), to try a piece first.")
    ] = None,
) -> None:
    from mma.api import load_model
    from mma.cli.video import parse_frames, split_videos, upscale_videos  # the video branch
    from mma.engine import Engine

    started = time.perf_counter()
    inputs, videos = split_videos(inputs)
    frame_range = parse_frames(frames)
    tile_size = _parse_tile(tile)
    if scale is not None and scale < 2:
        raise ConfigError(f"--scale {scale}: the factor to enlarge by; use 2, 3 or 4")
    if format is not None and not _writable(format):
        raise ConfigError(f"--format {format}: use png, jpg, webp or tiff")
    if alpha not in ("resize", "model"):
        raise ConfigError(f"--alpha {alpha}: use resize or model")
    if force and skip_existing:
        raise ConfigError("--force and --skip-existing: choose one (replace existing outputs, or keep them)")
    batch_size = _parse_batch(batch)
    memory_cap = _parse_max_memory(max_memory)
    from tqdm.auto import tqdm

    from mma.cli.shards import gather, on_main, processes, share, threads_for, together

    with processes(device) as placement:  # alone, or one of the processes torchrun started

        def make_engine() -> Engine:
            loaded = load_model(model, scale, device=placement.device, dtype=dtype)
            return Engine(  # in the precision the model was placed in: a refused half precision warns once
                loaded,
                device=placement.device,
                dtype=loaded.dtype,
                threads=threads_for(threads, placement),
                tile=tile_size,
                overlap=overlap,
                batch=batch_size,
                alpha=alpha,
                max_memory=memory_cap,
            )

        engine = together(make_engine, placement)
        label = suffix if suffix is not None else f"_x{engine.scale}"
        jobs, planned = on_main(
            lambda: _planned(inputs, output, label, format, force, skip_existing, quiet), placement
        )
        software = _software_tag(model, engine.scale)
        show_progress = placement.main and not quiet  # plain lines now and then when stderr is a log
        show_bars = show_progress and sys.stderr.isatty()
        tally = Tally()
        mine = share(jobs, placement)
        for job in tqdm(
            mine, desc="images", unit="image", disable=not show_bars or len(mine) < 2, leave=False
        ):
            try:
                _run(job, engine, force, quiet, show_progress, software)
            except MMAError as exc:
                tally.failed += 1
                report_file_error(job.source, exc)
            else:
                tally.done += 1
                if not quiet:
                    tqdm.write(f"{job.source} -> {job.target}")
        if videos and placement.main:
            videos_tally = upscale_videos(
                videos,
                engine=engine,
                output=output,
                label=label,
                single=len(videos) == 1 and not inputs,
                codec=codec,
                crf=crf,
                frames=frame_range,
                force=force,
                skip_existing=skip_existing,
                quiet=quiet,
                show_bars=show_bars,
                software=software,
            )
            planned = _total([planned, videos_tally])
        total = _total([planned, *gather(tally, placement)])
        if placement.main and not quiet:
            typer.echo(
                f"{total.done} done, {total.skipped} skipped, {total.failed} failed "
                f"in {time.perf_counter() - started:.1f} s"
            )
        if total.failed:
            raise typer.Exit(1)


def _planned(
    inputs: list[str],
    output: Path | None,
    label: str,
    format: str | None,
    force: bool,
    skip_existing: bool,
    quiet: bool,
) -> tuple[list[Job], Tally]:
    """The jobs of the batch and what planning already decided (skipped files, refused ones, printed)."""
    tally = Tally()
    sources = _expand(inputs, tally)
    jobs = (
        _plan(sources, output, label, format, force, skip_existing, quiet, tally, single=len(inputs) == 1)
        if sources
        else []
    )
    return jobs, tally


def _total(tallies: list[Tally]) -> Tally:
    """The tallies of planning and of every process, as one."""
    return Tally(
        sum(t.done for t in tallies), sum(t.skipped for t in tallies), sum(t.failed for t in tallies)
    )


def _software_tag(model: str, scale: int) -> str:
    """The Software tag of every output: the model by name, never a local path (it would leak folders)."""
    from mma.api import software_tag

    return software_tag(Path(model).name if Path(model).expanduser().exists() else model, scale)


def _parse_tile(text: str) -> int | str:
    if text.lower() == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise ConfigError(f"--tile {text}: use a size in pixels, 'auto' or 0")


def _parse_max_memory(text: str | None) -> int | None:
    from mma.tiling import parse_memory

    try:
        return parse_memory(text) if text is not None else None
    except ConfigError as exc:
        raise ConfigError(f"--max-memory {text}: {exc}") from None


def _parse_batch(text: str) -> int | str:
    if text.lower() == "auto":
        return "auto"
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"--batch {text}: use a number of tiles (1 or more) or 'auto'")


def report_file_error(source: Path, exc: Exception) -> None:
    """`error: <file>: <reason>` on one line (library messages often name the file already)."""
    message = str(exc)
    prefix = "" if message.startswith(str(source)) else f"{source}: "
    typer.echo(f"error: {prefix}{message}", err=True)


def _expand(inputs: list[str], tally: Tally) -> list[Path]:
    """Files as given; folders as their images and globs as their matches, leaving out images that
    `mma upscale` wrote itself (by their Software tag), so a second run does not upscale the first's results."""
    from PIL import Image

    from mma.api import made_by_mma

    extensions = set(Image.registered_extensions())
    sources: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            images = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
            )
            found = [p for p in images if not made_by_mma(p)]
            if not found:
                tally.failed += 1
                typer.echo(f"error: {path}: no images in this folder{_ours(images)}", err=True)
            sources += found
        elif not path.exists() and GLOB_CHARACTERS & set(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            files = [m for m in matches if m.is_file()]
            found = [m for m in files if not made_by_mma(m)]
            if not found:
                tally.failed += 1
                typer.echo(f"error: {item}: no files match{_ours(files)}", err=True)
            sources += found
        elif not path.exists():
            tally.failed += 1
            hint = " (flags such as --force take no value)" if item.lower() in BOOLEAN_WORDS else ""
            report_file_error(path, ImageReadError(f"no such file or folder{hint}"))
        else:
            sources.append(path)
    return list(dict.fromkeys(sources))


def _ours(files: list[Path]) -> str:
    """Why a folder or glob that has files yields no inputs: they are all earlier results."""
    return f" (only {len(files)} written by mma upscale, which are not taken as inputs)" if files else ""


def _plan(
    sources: list[Path],
    output: Path | None,
    suffix: str,
    format: str | None,
    force: bool,
    skip_existing: bool,
    quiet: bool,
    tally: Tally,
    single: bool,
) -> list[Job]:
    """Where each result goes; refuses up front what would overwrite a file that must be kept or could not
    be written, so no image is upscaled only to fail at the end. Creates no folder (writing does)."""
    from mma.fileio import unwritable_reason

    to_file = (
        output is not None and single and len(sources) == 1 and not output.is_dir() and output.suffix != ""
    )
    if output is not None and not to_file:
        if _writable(output.suffix) and not output.is_dir():
            raise OutputError(f"{output}: names one file but there are {len(sources)} inputs; give a folder")
        reason = unwritable_reason(output)
        if reason is not None:
            raise OutputError(f"{output}: cannot be the output folder ({reason})")
    inputs = {_identity(s) for s in sources}
    jobs: list[Job] = []
    claimed: dict[tuple[int, int] | str, Path] = {}
    unwritable: dict[Path, str | None] = {}  # each folder is probed once, however many outputs go there
    for source in sources:
        target = output if to_file and output is not None else _target(source, output, suffix, format)
        problem = None
        if not _writable(target.suffix):
            problem = f"{target}: unknown output format; use .png, .jpg, .webp or .tiff"
        elif _identity(target) in inputs:
            problem = f"{target}: output is one of the inputs; choose another --output or --suffix"
        elif _identity(target) in claimed:
            problem = f"{target}: also the output of {claimed[_identity(target)]}"
        elif target.exists() and skip_existing:
            tally.skipped += 1
            if not quiet:
                typer.echo(f"{source} -> {target} (exists, skipped)")
            continue
        elif target.exists() and not force:
            problem = f"{target}: exists (use --force to replace it, or --skip-existing to keep it)"
        else:
            if target.parent not in unwritable:
                unwritable[target.parent] = unwritable_reason(target.parent)
            if unwritable[target.parent] is not None:
                problem = f"{target}: cannot write there ({unwritable[target.parent]})"
        if problem is not None:
            tally.failed += 1
            report_file_error(source, OutputError(problem))
            continue
        claimed[_identity(target)] = source
        jobs.append(Job(source, target))
    return jobs


def _target(source: Path, folder: Path | None, suffix: str, format: str | None) -> Path:
    extension = (format or source.suffix.lstrip(".")).lower()
    if not _writable(extension):
        extension = "png"
    return (folder or source.parent) / f"{source.stem}{suffix}.{extension}"


def _writable(extension: str) -> bool:
    """Whether a suffix (with or without its dot) names a format `mma upscale` writes."""
    from mma.api import OUTPUT_FORMATS as FORMATS  # lazy: keeps `mma --help` free of torch

    return extension.lower().lstrip(".") in FORMATS


def _identity(path: Path) -> tuple[int, int] | str:
    """The same file however it is spelled (inode for existing files, absolute path otherwise)."""
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return str(path.resolve())


def _run(job: Job, engine: object, force: bool, quiet: bool, show_progress: bool, software: str) -> None:
    """Upscale one file into its target, reporting library warnings on stderr unless --quiet."""
    from mma.api import upscale_file
    from mma.progress import TileProgressBar

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TileProgressBar(desc=job.source.name, position=1, disable=not show_progress) as report:
            upscale_file(engine, job.source, job.target, overwrite=force, progress=report, software=software)
    if not quiet:
        for warning in caught:
            if issubclass(warning.category, (UserWarning, RuntimeWarning)):
                typer.echo(f"warning: {job.source}: {warning.message}", err=True)
