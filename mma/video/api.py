"""`upscale_video()` and `upscale_frames()`: a video file to its upscaled twin, or frames to frames.

`upscale_video` keeps what a viewer expects of the source: every frame at its own timestamp (variable
frame rate too), the audio and subtitle streams copied packet for packet, rotation and colour tags, and the
pixel format where the encoder takes it. It works in segments (`mma.video.segments`), so a job cut short
resumes with `skip_existing=True` from the last finished segment, and writes the output atomically.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mma.api import make_engine
from mma.engine import DEFAULT_OVERLAP, Batch, Engine, Tile
from mma.errors import ConfigError, OutputError, VideoOutputError, VideoReadError, VideoTruncatedError
from mma.fileio import check_writable
from mma.video.backend import require_av
from mma.video.formats import EncoderSettings, encoder_settings, muxer_for
from mma.video.frames import upscale_frame_stream
from mma.video.segments import SEGMENT_FRAMES, Segments, SegmentWriter, join, work_folder
from mma.video.source import DecodedFrame, DecodeState, SourceInfo, decoded_frames, open_source

# A video whose frames end this much before the duration its header records was cut short (a margin for
# containers that count the duration from another start than the first frame's).
TRUNCATION_MARGIN_S = 0.5
FrameProgress = Callable[[int, int], None]  # (frames done, frames to do; 0 when the source does not say)


@dataclass(frozen=True)
class VideoResult:
    """What `upscale_video` made."""

    path: Path
    frames: int  # frames in the output
    upscaled: int  # frames upscaled by this call (fewer than `frames` when finished segments were reused)
    skipped: bool = False  # the output existed and skip_existing kept it


def upscale_frames(
    frames: Iterable[np.ndarray | Image.Image],
    scale: int | None = None,
    model: Any = "mma-t",
    *,
    tile: Tile = "auto",
    overlap: int = DEFAULT_OVERLAP,
    batch: Batch = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    threads: int | None = None,
    max_memory: int | str | None = None,
) -> Iterator[np.ndarray | Image.Image]:
    """Each frame upscaled, in order, as the kind it came as (numpy HxW[xC] uint8/uint16/float, or PIL).

    For frames the caller already has (a camera, a game, another decoder): several whole frames go through
    one forward where memory allows (`batch`: "auto" or a number), larger ones are tiled. Lazy: a frame is
    read only when the results before it are taken."""
    engine = make_engine(
        model,
        scale,
        tile=tile,
        overlap=overlap,
        batch=batch,
        device=device,
        dtype=dtype,
        threads=threads,
        max_memory=max_memory,
    )
    kinds: deque[str | None] = deque()

    def arrays() -> Iterator[np.ndarray]:
        for frame in frames:
            if isinstance(frame, Image.Image):
                kinds.append(frame.mode)
                yield np.asarray(frame)
            elif isinstance(frame, np.ndarray):
                kinds.append(None)
                yield frame
            else:
                raise ConfigError(f"cannot upscale a {type(frame).__name__} frame: give numpy arrays or PIL")

    for result in upscale_frame_stream(engine, arrays()):
        mode = kinds.popleft()
        yield result if mode is None else Image.fromarray(result, mode=mode)


def upscale_video(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    scale: int | None = None,
    model: Any = "mma-t",
    *,
    codec: str | None = None,
    crf: int | None = None,
    frames: tuple[int, int | None] | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    tile: Tile = "auto",
    overlap: int = DEFAULT_OVERLAP,
    batch: Batch = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    threads: int | None = None,
    max_memory: int | str | None = None,
    progress: bool | FrameProgress = False,
) -> VideoResult:
    """Upscale the video `source` into `target` (container from its suffix: .mp4, .mkv, .mov, .webm, ...).

    `codec`: an FFmpeg encoder or alias (default libx264: h264, h265, ffv1, vp9, ...), `crf` its quality
    (default 18 where it has one). `frames=(start, stop)` upscales only those frames (stop exclusive, None
    for the end), timestamps from zero. `skip_existing`: keep an existing `target`, and resume an
    interrupted job from its finished segments. The engine options are `mma.upscale`'s. `progress`: True for
    a bar with frames per second and time left, or a callback `(done, total)`.
    """
    engine = make_engine(
        model,
        scale,
        tile=tile,
        overlap=overlap,
        batch=batch,
        device=device,
        dtype=dtype,
        threads=threads,
        max_memory=max_memory,
    )
    return upscale_video_with(
        engine,
        source,
        target,
        codec=codec,
        crf=crf,
        frames=frames,
        overwrite=overwrite,
        skip_existing=skip_existing,
        progress=progress,
    )


def upscale_video_with(
    engine: Engine,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    codec: str | None = None,
    crf: int | None = None,
    frames: tuple[int, int | None] | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    segment_frames: int = SEGMENT_FRAMES,
    progress: bool | FrameProgress = False,
    software: str | None = None,
) -> VideoResult:
    """`upscale_video` with an engine already made (the CLI makes one for many files). `software`, when
    given, becomes the output's comment (see `mma.imaging.io.software_tag`)."""
    av = require_av()
    source, target = Path(source), Path(target)
    start, stop = _checked_range(frames)
    if segment_frames < 1:
        raise ConfigError(f"segment_frames must be 1 or more, got {segment_frames}")
    muxer = muxer_for(target)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise OutputError(f"{target}: output is the input; choose another output name")
    if target.exists():
        if skip_existing:
            return VideoResult(target, 0, 0, skipped=True)
        if not overwrite:
            raise OutputError(f"{target}: exists (use --force to replace it, or --skip-existing to keep it)")
    check_writable(target)
    container, info = open_source(source)
    with container:
        settings = encoder_settings(
            codec, crf, info.pix_fmt, (info.width * engine.scale, info.height * engine.scale)
        )
        _check_container(av, container, info, settings, muxer, target)
        manifest = _manifest(engine, info, settings, start, stop, segment_frames)
        segments = Segments.open(work_folder(target), manifest, resume=skip_existing)
        state = DecodeState()
        with _encoder_errors(target, settings):
            run = _encode_segments(
                engine, container, info, settings, segments, state, start, stop, segment_frames, progress
            )
    if run.frames == 0:
        segments.remove()
        raise VideoReadError(
            f"{source}: no frames to upscale"
            + (f" in --frames {start}:{'' if stop is None else stop}" if frames is not None else "")
            + (f" (decoding stopped: {state.error})" if state.error else "")
        )
    offset = run.first_time if frames is not None else Fraction(0)
    span = (float(run.first_time), float(run.end_time)) if frames is not None else (float("-inf"), None)
    parts = [(segments.path(number), pts) for number, pts in sorted(run.segment_starts.items())]
    with av.open(str(source)) as again, _encoder_errors(target, settings):
        join(parts, again, info, target, muxer, span, offset, software)
    segments.remove()
    expected = min(stop, info.expected_frames) if stop is not None else info.expected_frames
    short = (stop is None or stop > state.decoded) and state.decoded < expected
    if stop is None and not info.expected_frames and info.video_duration:  # no count: its duration, then
        short = float(run.end_time) < info.start_time + info.video_duration - TRUNCATION_MARGIN_S
    if state.error is not None or short:
        raise VideoTruncatedError(
            f"{source}: truncated: decoding stopped after frame {state.decoded} ({state.last_time:.2f} s)"
            + (f" of the {info.expected_frames} its header lists" if info.expected_frames else "")
            + (
                f" of the {info.video_duration:.2f} s its header lists"
                if not info.expected_frames and info.video_duration
                else ""
            )
            + (f" ({state.error})" if state.error else "")
            + f"; the {run.frames} frames before it are upscaled in {target}"
        )
    return VideoResult(target, run.frames, run.upscaled)


@contextlib.contextmanager
def _encoder_errors(target: Path, settings: EncoderSettings) -> Iterator[None]:
    """FFmpeg's refusal to encode or mux as one line naming the output (the work folder is kept)."""
    av = require_av()
    try:
        yield
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise VideoOutputError(f"{target}: {settings.codec} ({settings.pix_fmt}) failed: {reason}") from None


@dataclass
class _Run:
    frames: int = 0  # frames in the range that decoded (finished segments included)
    upscaled: int = 0
    first_time: Fraction = Fraction(0)  # of the first frame in the range, in seconds
    end_time: Fraction = Fraction(0)  # just after the last frame in the range
    segment_starts: dict[int, int] = field(default_factory=dict)  # segment -> source pts of its first frame


def _encode_segments(
    engine: Engine,
    container: Any,
    info: SourceInfo,
    settings: EncoderSettings,
    segments: Segments,
    state: DecodeState,
    start: int,
    stop: int | None,
    segment_frames: int,
    progress: bool | FrameProgress,
) -> _Run:
    """Decode, upscale and encode every frame of the range whose segment is not finished yet."""
    run = _Run()
    pending: deque[DecodedFrame] = deque()
    to_do = _frames_to_do(info, segments, start, stop, segment_frames)

    def fresh() -> Iterator[np.ndarray]:
        for frame in decoded_frames(container, info, state, start, stop):
            time = frame.pts * info.time_base
            if run.frames == 0:
                run.first_time = time
            run.frames += 1
            step = frame.duration or (1 / info.rate / info.time_base if info.rate else 0)
            run.end_time = time + step * info.time_base
            number = (frame.index - start) // segment_frames
            run.segment_starts.setdefault(number, frame.pts)
            if segments.finished(number):
                continue
            pending.append(frame)
            yield frame.pixels

    writer: SegmentWriter | None = None
    number = -1
    with _FrameBar(progress, to_do, info.path.name) as report:
        try:
            for pixels in upscale_frame_stream(engine, fresh()):
                frame = pending.popleft()
                if (frame.index - start) // segment_frames != number:
                    if writer is not None:
                        writer.close()
                    number = (frame.index - start) // segment_frames
                    height, width = pixels.shape[:2]
                    writer = SegmentWriter(segments.path(number), settings, info, width, height)
                writer.write(pixels, frame.pts)
                run.upscaled += 1
                report(run.upscaled, to_do)
            if writer is not None:
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.abandon()
    return run


def _frames_to_do(info: SourceInfo, segments: Segments, start: int, stop: int | None, size: int) -> int:
    """Frames this call will upscale, as far as the header tells (0 when it does not)."""
    known = info.estimated_frames
    end = stop if stop is not None else known
    if known:
        end = min(end, known)
    if not end or end <= start:
        return 0
    done = sum(
        min(size, end - start - number * size)
        for number in range(-(-(end - start) // size))
        if segments.finished(number)
    )
    return end - start - done


class _FrameBar:
    """A `(done, total)` callback: the caller's own, the shared progress display in frames (a bar with rate
    and time left on a terminal, sparse plain lines in a log), or none."""

    def __init__(self, progress: bool | FrameProgress, total: int, name: str) -> None:
        self.progress, self.total, self.name, self.meter = progress, total, name, None

    def __enter__(self) -> FrameProgress:
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda done, total: None
        from mma.progress import Meter

        self.meter = Meter(self.name, total=self.total or None, unit="frame", leave=False)
        return lambda done, total: self.meter.set(done, total or None)

    def __exit__(self, *_: object) -> None:
        if self.meter is not None:
            self.meter.close()


def _checked_range(frames: tuple[int, int | None] | None) -> tuple[int, int | None]:
    if frames is None:
        return 0, None
    start, stop = frames
    if start < 0 or (stop is not None and stop <= start):
        raise ConfigError(
            f"frames {start}:{'' if stop is None else stop}: give START:END with 0 <= START < END"
        )
    return start, stop


def _check_container(
    av: Any, source: Any, info: SourceInfo, settings: EncoderSettings, muxer: str, target: Path
) -> None:
    """Refuse up front an output container that cannot hold the upscaled video or a copied stream."""
    with av.open(os.devnull, "w", format=muxer) as probe:
        supported = probe.supported_codecs
    wanted = [("video", settings.codec_name)]
    wanted += [(source.streams[i].type, source.streams[i].codec_context.name) for i in info.copied]
    refused = [f"{kind} {name}" for kind, name in wanted if name not in supported]
    if refused:
        raise VideoOutputError(
            f"{target}: a {target.suffix} file cannot hold the {', '.join(refused)} stream"
            f"{'s' if len(refused) > 1 else ''}; use .mkv, or another --codec"
        )


def _manifest(
    engine: Engine, info: SourceInfo, settings: EncoderSettings, start: int, stop: int | None, size: int
) -> dict[str, Any]:
    """What makes two runs the same job: a resumed run reuses segments only when all of this is equal."""
    stat = info.path.stat()
    return {
        "source": str(info.path.resolve()),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "model": str(engine.model.source),
        "sha256": engine.model.sha256,
        "scale": engine.scale,
        "dtype": str(engine.dtype),
        "codec": settings.codec,
        "pix_fmt": settings.pix_fmt,
        "options": [list(option) for option in settings.options],
        "frames": [start, stop],
        "segment_frames": size,
    }
