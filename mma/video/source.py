"""Opening a source video: what it holds (one line of error when it is not a usable video) and its frames
as arrays, in presentation order, with where decoding stopped when the file is cut short."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mma.errors import VideoReadError
from mma.video.backend import require_av
from mma.video.formats import is_deep


@dataclass(frozen=True)
class SourceInfo:
    """What the output must keep of the source's video stream."""

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate (timestamps, not this, place each frame)
    expected_frames: int  # from the header; 0 when the container does not say
    pix_fmt: str
    colour: dict[str, int]  # color_range, color_primaries, color_trc, colorspace of the codec
    rotation: int  # display rotation in degrees (the pixels are stored unrotated)
    copied: tuple[int, ...]  # indices of the audio and subtitle streams copied untouched
    start_time: float  # first timestamp of the video stream, in seconds
    duration: float | None  # seconds, when the container says
    video_duration: float | None  # of the video stream alone, when the container records it

    @property
    def estimated_frames(self) -> int:
        """The header's frame count, else duration times the average rate (for progress only), else 0."""
        if self.expected_frames or not self.duration or not self.rate:
            return self.expected_frames
        return round(self.duration * self.rate)


@dataclass
class DecodedFrame:
    index: int  # 0-based, in presentation order
    pts: int  # in SourceInfo.time_base
    duration: int
    pixels: np.ndarray  # HxWx3 uint8, or uint16 for sources deeper than 8 bits


@dataclass
class DecodeState:
    """How decoding ended: `error` is set when the file stopped decoding before its end."""

    decoded: int = 0
    error: str | None = None
    last_time: float = field(default=0.0)


def open_source(path: str | os.PathLike[str]) -> tuple[Any, SourceInfo]:
    """Open `path` with PyAV and describe it, or VideoReadError saying why it cannot be upscaled."""
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{path}: not a video ({_reason(exc)})") from None
    try:
        info = _describe(av, container, path)
    finally:
        container.close()  # reopened below: decoding restarts at the first frame with a fresh decoder
    return av.open(str(path)), info


def _describe(av: Any, container: Any, path: Path) -> SourceInfo:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise VideoReadError(f"{path}: no video stream (holds {', '.join(kinds)})")
    stream = container.streams.video[0]
    context = stream.codec_context
    if context is None or not context.is_decoder or context.width <= 0 or context.height <= 0:
        raise VideoReadError(f"{path}: video codec {_codec_name(stream)} cannot be decoded by this PyAV")
    first = _first_frame(av, container, stream, path)
    copied = tuple(s.index for s in container.streams if s.type in ("audio", "subtitle"))
    colour = {name: int(getattr(context, name)) for name in ("color_range", "color_primaries", "color_trc")}
    colour["colorspace"] = int(context.colorspace)
    return SourceInfo(
        path=path,
        width=context.width,
        height=context.height,
        time_base=stream.time_base,
        rate=stream.average_rate or stream.guessed_rate,
        expected_frames=int(stream.frames or 0),
        pix_fmt=context.pix_fmt or first.format.name,
        colour=colour,
        rotation=round(first.rotation or 0),
        copied=copied,
        start_time=float((stream.start_time or 0) * stream.time_base),
        duration=float(stream.duration * stream.time_base)
        if stream.duration
        else (container.duration / 1e6 if container.duration else None),
        video_duration=_video_duration(stream),
    )


def _video_duration(stream: Any) -> float | None:
    """The video stream's own duration: its header field, else Matroska's DURATION tag (HH:MM:SS.fraction)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    hours, _, rest = str(stream.metadata.get("DURATION", "")).partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _first_frame(av: Any, container: Any, stream: Any, path: Path) -> Any:
    """Decode one frame, so a codec that opens but cannot decode fails here, before any work."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise VideoReadError(
            f"{path}: video codec {_codec_name(stream)} does not decode ({_reason(exc)})"
        ) from None
    raise VideoReadError(f"{path}: the video stream holds no decodable frame")


def decoded_frames(
    container: Any, info: SourceInfo, state: DecodeState, start: int = 0, stop: int | None = None
) -> Iterator[DecodedFrame]:
    """Frames `start` to `stop` (exclusive) as arrays. Stops quietly where the file stops decoding, noting
    in `state` why, so what came before is still upscaled."""
    av = require_av()
    stream = container.streams.video[0]
    layout = "rgb48le" if is_deep(info.pix_fmt) else "rgb24"
    index = -1
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            state.error = _reason(exc)
            break
        for frame in frames:
            index += 1
            state.decoded = index + 1
            if frame.pts is not None:
                state.last_time = float(frame.pts * info.time_base)
            if index < start:
                continue
            if stop is not None and index >= stop:
                return
            yield DecodedFrame(index, _pts(frame, index, info), int(frame.duration or 0), _rgb(frame, layout))


def _pts(frame: Any, index: int, info: SourceInfo) -> int:
    """The frame's timestamp; a frame without one is placed at its index times the average rate."""
    if frame.pts is not None:
        return int(frame.pts)
    rate = info.rate or Fraction(25)
    return round(index / rate / info.time_base)


def _rgb(frame: Any, layout: str) -> np.ndarray:
    """RGB pixels, converted with the frame's own matrix and range (what a player shows)."""
    converted = frame.reformat(format=layout, src_color_range=frame.color_range or None)
    return converted.to_ndarray()


def _codec_name(stream: Any) -> str:
    context = stream.codec_context
    name = getattr(context, "name", None) if context is not None else None
    return name or "(unknown)"


def _reason(exc: Exception) -> str:
    """FFmpeg's words for an error, without PyAV's errno and file name decoration."""
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0]


def made_by_mma(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a video that `mma upscale` wrote, by the comment it leaves (not by its name)."""
    from mma.imaging.io import MADE_BY

    av = require_av()
    try:
        with av.open(str(path)) as container:
            comment = next((v for k, v in container.metadata.items() if k.lower() == "comment"), "")
    except av.error.FFmpegError:
        return False
    return comment.startswith(f"{MADE_BY} ")
