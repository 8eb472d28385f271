"""Every error the library raises on purpose, defined once.

The CLI turns any `MMAError` into a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class MMAError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""


class BackendUnavailableError(MMAError):
    """A selective-scan backend was requested that cannot run here (says why and what to install)."""


class CheckpointError(MMAError):
    """A weights file is unreadable, corrupt, unsafe, or does not fit the network."""


class WeightsNotFoundError(MMAError):
    """No weights are available for the requested model name and scale."""


class RepositoryFileMissingError(WeightsNotFoundError):
    """A Hub repository (or revision) exists but holds no such file; optional files are then skipped."""


class ChecksumError(MMAError):
    """Downloaded weights do not match their published sha256."""


class ImageReadError(MMAError):
    """An input is missing, not an image, truncated, empty or too large to decode safely."""


class ValueRangeError(ImageReadError):
    """A float image whose values are far outside [0, 1] (0..255 data, most often), which clipping would ruin."""


class OutputError(MMAError):
    """An output cannot be written: it exists, equals an input, or its directory is not writable."""


class ConfigError(MMAError):
    """An unknown variant, an unsupported scale or an invalid option value."""


class VideoUnavailableError(MMAError):
    """Video needs PyAV, an optional extra that is not installed (the message names the extra)."""


class VideoReadError(MMAError):
    """An input is not a video, has no video stream, or its codec cannot be decoded here."""


class VideoTruncatedError(VideoReadError):
    """A video stopped decoding before its end; what decoded was upscaled and written, the message says
    where it stopped."""


class VideoOutputError(OutputError):
    """A video output cannot be made: its container cannot hold the streams, or the encoder or muxer failed."""
