"""Video: decode with PyAV (the optional extra `mma-sr[video]`), upscale frames through the engine, encode.

`upscale_video` turns a video file into its upscaled twin, resumable by segments; `upscale_frames` upscales
frames the caller already has. Importing this package does not import PyAV; using a file does.
"""

from __future__ import annotations

from mma.video.api import VideoResult, upscale_frames, upscale_video, upscale_video_with
from mma.video.formats import VIDEO_EXTENSIONS, is_video

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoResult",
    "is_video",
    "upscale_frames",
    "upscale_video",
    "upscale_video_with",
]
