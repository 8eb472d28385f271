"""The zoomed crops of an evaluation report, kept while `mma eval` runs so no whole image is held.

Each image's window is chosen once, from the truth alone: where bicubic upscaling loses the most (the
largest difference between the HR image and its bicubic round trip), which is where super-resolution has
something to show. Every method's crop is then cut at that same window.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

from mma.report.regions import Crop, cut, largest_difference

CROP_SIZE = 80  # HR pixels: enough to see texture, small enough for a report of a few hundred images
TRUTH = "HR"


@dataclass
class ImageCrops:
    """One image's window and the pixels each method (and the truth, under `TRUTH`) shows there."""

    window: Crop
    pixels: dict[str, np.ndarray] = field(default_factory=dict)


class CropCollector:
    """Collects crops as images are scored: `keeper(dataset, method)` is `evaluate_images`'s `keep`."""

    def __init__(self, scale: int, size: int = CROP_SIZE) -> None:
        self.scale = scale
        self.size = size
        self.crops: dict[tuple[str, str], ImageCrops] = {}

    def keeper(self, dataset: str, method: str) -> Callable[[Path, np.ndarray, np.ndarray], None]:
        def keep(path: Path, hr: np.ndarray, sr: np.ndarray) -> None:
            key = (dataset, path.name)
            if key not in self.crops:
                window = detail_window(hr, self.scale, self.size)
                self.crops[key] = ImageCrops(window, {TRUTH: cut(hr, window)})
            entry = self.crops[key]
            entry.pixels[method] = cut(sr, entry.window)

        return keep


def merged(parts: Iterable[dict[tuple[str, str], ImageCrops]]) -> dict[tuple[str, str], ImageCrops]:
    """The crops of several processes (each scored a share of the images with every method) as one."""
    result: dict[tuple[str, str], ImageCrops] = {}
    for part in parts:
        for key, entry in part.items():
            if key in result:
                result[key].pixels.update(entry.pixels)
            else:
                result[key] = ImageCrops(entry.window, dict(entry.pixels))
    return result


def detail_window(hr: np.ndarray, scale: int, size: int = CROP_SIZE) -> Crop:
    """The window where bicubic loses the most: HR against its MATLAB-bicubic reduction and enlargement."""
    from mma.imaging.resize import imresize

    if min(hr.shape[:2]) < scale * 2:
        return Crop(0, 0, min(size, *hr.shape[:2]))
    return largest_difference([hr, imresize(imresize(hr, 1 / scale), scale)], size)


def encode(pixels: np.ndarray, webp: bool | None = None) -> tuple[str, bytes]:
    """(MIME type, bytes) of a crop: lossless WebP where Pillow has it (about half PNG's size), else PNG."""
    use_webp = features.check("webp") if webp is None else webp
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if use_webp:
        image.save(buffer, format="WEBP", lossless=True, quality=100, method=4)
        return "image/webp", buffer.getvalue()
    image.save(buffer, format="PNG", optimize=True)
    return "image/png", buffer.getvalue()
