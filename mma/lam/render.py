"""Pictures of a LAM with Pillow alone: the heatmap, and the heatmap blended over the image with the window drawn.

The colours follow the LAM paper's figures: white where a pixel contributes nothing, through red to dark red
at the largest contribution, so the spread of the red area is what the diffusion index measures.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mma.lam.attribution import LAMResult

# (position, RGB) stops of the white -> red -> dark-red ramp.
_STOPS = np.array([0.0, 0.5, 1.0])
_COLOURS = np.array([[255.0, 255.0, 255.0], [255.0, 0.0, 0.0], [128.0, 0.0, 0.0]])

WINDOW_COLOUR = (0, 90, 255)  # blue: stays visible on the red heat


def colorize(values: np.ndarray) -> np.ndarray:
    """(h, w) values in [0, 1] (clipped) -> (h, w, 3) uint8 through the white-red ramp."""
    t = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    channels = [np.interp(t, _STOPS, _COLOURS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def heatmap_image(attribution: np.ndarray, zoom: int = 1) -> Image.Image:
    """The |attribution| map scaled to its maximum, each input pixel drawn as a zoom x zoom block."""
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    peak = magnitude.max() if magnitude.size else 0.0
    image = Image.fromarray(colorize(magnitude / peak if peak > 0 else magnitude), mode="RGB")
    if zoom > 1:
        image = image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)
    return image


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, C) float in [0, 1] (C = 1 or 3; extra channels ignored) -> an RGB Pillow image."""
    array = np.rint(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.shape[2] < 3:
        return Image.fromarray(array[..., 0], mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB")


def overlay_image(result: LAMResult, base: Image.Image | None = None, alpha: float = 0.5) -> Image.Image:
    """The heatmap blended over `base` (default: the input enlarged to the output size), window outlined.

    `base` may have any size (e.g. the HR ground truth, or the LR input); heatmap and window are scaled to it.
    `alpha` is the weight of the image under the heat (LAM's figures use 0.5).
    """
    height, width = result.output.shape[:2]
    if base is None:
        base = to_pil(result.image).resize((width, height), Image.Resampling.BICUBIC)
    base = base.convert("RGB")
    heat = heatmap_image(result.attribution).resize(base.size, Image.Resampling.NEAREST)
    blended = Image.blend(heat, base, alpha)
    fx, fy = base.width / width, base.height / height
    left, top, right, bottom = result.box
    outline = [
        round(left * fx),
        round(top * fy),
        max(round(right * fx) - 1, 0),
        max(round(bottom * fy) - 1, 0),
    ]
    ImageDraw.Draw(blended).rectangle(
        outline, outline=WINDOW_COLOUR, width=max(1, round(min(base.size) / 200))
    )
    return blended
