"""Which files are videos, which container each output suffix means, and how the encoder is set up.

Kept free of PyAV at import time: the CLI asks `is_video` for every input before anything heavy loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mma.errors import ConfigError, VideoOutputError
from mma.video.backend import require_av

# Output suffix -> FFmpeg muxer. Only these are written; any of VIDEO_EXTENSIONS is read.
MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
    ".mts": "mpegts",
    ".nut": "nut",
}
VIDEO_EXTENSIONS = frozenset(MUXERS) | {".mpg", ".mpeg", ".m2ts", ".3gp", ".ogv", ".wmv", ".flv", ".vob"}

DEFAULT_CODEC = "libx264"
# CRF 18: visually lossless for H.264 on most footage (the x264 default, 23, softens upscaled detail).
DEFAULT_CRF = 18
# What users type -> FFmpeg encoder name.
CODEC_ALIASES = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
}
# Encoders that take a `crf` option, and the largest value each accepts.
CRF_RANGE = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libsvtav1": 63}


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a video by its suffix (a cheap test; opening it is what proves it)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def muxer_for(path: str | os.PathLike[str]) -> str:
    """The FFmpeg muxer an output path asks for, or VideoOutputError listing the suffixes written."""
    suffix = Path(path).suffix.lower()
    if suffix not in MUXERS:
        raise VideoOutputError(f"{path}: unknown video container; use one of {', '.join(sorted(MUXERS))}")
    return MUXERS[suffix]


@dataclass(frozen=True)
class EncoderSettings:
    """The encoder every segment of one output is made with (equal settings are what lets them join)."""

    codec: str  # FFmpeg encoder name, e.g. libx264
    pix_fmt: str
    options: tuple[tuple[str, str], ...]  # private encoder options, e.g. (("crf", "18"),)

    @property
    def codec_name(self) -> str:
        """The codec (not encoder) name, as containers list what they can hold: libx264 -> h264."""
        return require_av().Codec(self.codec, "w").canonical_name


def encoder_settings(
    codec: str | None, crf: int | None, source_pix_fmt: str, size: tuple[int, int] = (2, 2)
) -> EncoderSettings:
    """Settings for `codec` (default H.264) at `crf` (default DEFAULT_CRF where the encoder has one), in the
    source's pixel format when the encoder takes it, else 4:2:0 at the source's depth, else its first.
    An odd output `size` (width, height) cannot be subsampled: 4:4:4 is taken then, where the encoder has it."""
    av = require_av()
    name = CODEC_ALIASES.get((codec or DEFAULT_CODEC).lower(), (codec or DEFAULT_CODEC).lower())
    try:
        encoder = av.Codec(name, "w")
    except Exception:  # noqa: BLE001 (PyAV raises its own error types for an unknown name)
        raise ConfigError(
            f"--codec {codec}: no such video encoder here; try libx264, libx265 or ffv1"
        ) from None
    if encoder.type != "video":
        raise ConfigError(f"--codec {codec}: {name} is not a video encoder")
    formats = [f.name for f in encoder.video_formats or ()]
    deep = is_deep(source_pix_fmt)
    fallback = "yuv420p10le" if deep and "yuv420p10le" in formats else "yuv420p"
    pix_fmt = source_pix_fmt if source_pix_fmt in formats else fallback if fallback in formats else formats[0]
    if (size[0] % 2 or size[1] % 2) and _subsampled(pix_fmt):
        full = "yuv444p10le" if deep and "yuv444p10le" in formats else "yuv444p"
        pix_fmt = full if full in formats else pix_fmt
    options: tuple[tuple[str, str], ...] = ()
    if name in CRF_RANGE:
        value = DEFAULT_CRF if crf is None else crf
        if not 0 <= value <= CRF_RANGE[name]:
            raise ConfigError(f"--crf {crf}: {name} takes 0 to {CRF_RANGE[name]} (lower is better)")
        options = (("crf", str(value)),)
        if name == "libvpx-vp9":  # without a zero bit rate its CRF is only a ceiling under a default rate
            options += (("b", "0"),)
    elif crf is not None:
        raise ConfigError(f"--crf {crf}: {name} has no CRF (use libx264, libx265, vp9 or av1 for one)")
    return EncoderSettings(name, pix_fmt, options)


def is_deep(pix_fmt: str) -> bool:
    """Whether a pixel format holds more than 8 bits per component (its frames then go through as uint16)."""
    try:
        return max(c.bits for c in require_av().VideoFormat(pix_fmt).components) > 8
    except (ValueError, TypeError):
        return False


def _subsampled(pix_fmt: str) -> bool:
    """Whether a pixel format stores colour at a lower resolution than brightness (4:2:0, 4:2:2, ...)."""
    try:
        components = require_av().VideoFormat(pix_fmt, 2, 2).components
    except (ValueError, TypeError):
        return False
    return any(c.width < 2 or c.height < 2 for c in components)
