"""mma-sr: the MMA super-resolution network (Vision Mamba + channel attention).

The public API stays small; heavier modules are imported on first use so `import mma` is quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

_LAZY = {
    "build_model": "mma.model",
    "MMAConfig": "mma.model",
    "load_model": "mma.api",
    "upscale": "mma.api",
    "upscale_frames": "mma.video",
    "upscale_video": "mma.video",
    "imresize": "mma.imaging.resize",
}

__all__ = [
    "MMAConfig",
    "__version__",
    "build_model",
    "imresize",
    "load_model",
    "upscale",
    "upscale_frames",
    "upscale_video",
]  # == _LAZY + version

if TYPE_CHECKING:  # pragma: no cover
    from mma.api import load_model, upscale
    from mma.imaging.resize import imresize
    from mma.model import MMAConfig, build_model
    from mma.video import upscale_frames, upscale_video


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mma' has no attribute {name!r}")
