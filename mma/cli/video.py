"""The video branch of `mma upscale`: which inputs are videos, where each result goes, and the run.

`mma upscale` hands every input that names a video (by suffix; folders and globs contribute theirs) to
`upscale_videos`, which upscales them one by one with the same engine as the images. A bad video is one
`error:` line and the rest go on; an interrupted one keeps its finished segments for `--skip-existing`.
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mma.cli.upscale import GLOB_CHARACTERS, Tally, report_file_error
from mma.errors import ConfigError, MMAError, OutputError
from mma.video.formats import MUXERS, is_video

if TYPE_CHECKING:
    from mma.engine import Engine


def split_videos(inputs: list[str]) -> tuple[list[str], list[Path]]:
    """The inputs for the image path, and the videos: files with a video suffix, the videos in folders, and
    the videos a glob matches (a folder or glob with images as well stays an image input too)."""
    images: list[str] = []
    videos: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            found = [p for p in files if is_video(p)]
            videos += [p for p in found if not _ours(p)]
            if not found or any(_image_suffix(p) for p in files):
                images.append(item)
        elif not path.exists() and GLOB_CHARACTERS & set(item):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(item), recursive=True))
            found = [m for m in matches if m.is_file() and is_video(m)]
            videos += [m for m in found if not _ours(m)]
            if not found:
                images.append(item)
            else:
                images += [str(m) for m in matches if m.is_file() and not is_video(m)]
        elif is_video(path):
            videos.append(path)
        else:
            images.append(item)
    return images, list(dict.fromkeys(videos))


def parse_frames(text: str | None) -> tuple[int, int | None] | None:
    """`--frames START:END` (END exclusive; either may be left out) as numbers."""
    if text is None:
        return None
    start, colon, stop = text.partition(":")
    if not colon or not (start.isdigit() or not start) or not (stop.isdigit() or not stop):
        raise ConfigError(f"--frames {text}: use START:END in frames, e.g. 0:100 (END excluded)")
    first, end = int(start or 0), int(stop) if stop else None
    if end is not None and end <= first:
        raise ConfigError(f"--frames {text}: END must be after START")
    return first, end


def upscale_videos(
    videos: list[Path],
    *,
    engine: Engine,
    output: Path | None,
    label: str,
    single: bool,
    codec: str | None,
    crf: int | None,
    frames: tuple[int, int | None] | None,
    force: bool,
    skip_existing: bool,
    quiet: bool,
    show_bars: bool,
    software: str,
) -> Tally:
    """Upscale each video into its target; what became of each, for the batch's summary."""
    from mma.video import upscale_video_with
    from mma.video.segments import work_folder

    tally = Tally()
    for source in videos:
        target = _target(source, output, label, single)
        try:
            if target.exists() and source.exists() and target.resolve() == source.resolve():
                raise OutputError(f"{target}: output is the input; choose another --output or --suffix")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"{target}: cannot create its folder ({exc.strerror or exc})") from None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = upscale_video_with(
                    engine,
                    source,
                    target,
                    codec=codec,
                    crf=crf,
                    frames=frames,
                    overwrite=force,
                    skip_existing=skip_existing,
                    progress=show_bars,
                    software=software,
                )
        except MMAError as exc:
            tally.failed += 1
            report_file_error(source, exc)
            continue
        except KeyboardInterrupt:
            if work_folder(target).exists():
                typer.echo(
                    f"{source}: finished segments kept in {work_folder(target)}; "
                    "run the same command with --skip-existing to resume",
                    err=True,
                )
            raise
        if result.skipped:
            tally.skipped += 1
            if not quiet:
                typer.echo(f"{source} -> {target} (exists, skipped)")
            continue
        tally.done += 1
        if not quiet:
            for warning in caught:
                if issubclass(warning.category, (UserWarning, RuntimeWarning)):
                    typer.echo(f"warning: {source}: {warning.message}", err=True)
            reused = result.frames - result.upscaled
            note = f" ({reused} frames from finished segments)" if reused else ""
            typer.echo(f"{source} -> {target}: {result.frames} frames{note}")
    return tally


def _target(source: Path, output: Path | None, label: str, single: bool) -> Path:
    """`-o` itself for one video and a file name; else beside the source or in the `-o` folder, in the
    source's container when it is one written, else Matroska (which holds any stream)."""
    if output is not None and single and output.suffix and not output.is_dir():
        return output
    suffix = source.suffix.lower() if source.suffix.lower() in MUXERS else ".mkv"
    return (output or source.parent) / f"{source.stem}{label}{suffix}"


def _ours(path: Path) -> bool:
    """A video `mma upscale` wrote (a second run over a folder leaves its own results alone)."""
    from mma.video.source import made_by_mma

    try:
        return made_by_mma(path)
    except MMAError:  # no PyAV: the video is reported as such when it is run
        return False


def _image_suffix(path: Path) -> bool:
    from PIL import Image

    return path.suffix.lower() in Image.registered_extensions() and not is_video(path)
