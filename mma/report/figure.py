"""The comparison figure: one column per method (label, the whole image with the zoomed window marked, the
window enlarged, scores), drawn with Pillow alone.

Why a fixed column layout: a reader compares columns at a glance only when every column has the same size
and the same window; the geometry is returned with the picture so tests (and callers) can find each part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mma.errors import ConfigError
from mma.report.regions import Crop, checked_crop, cut

GAP = 8  # pixels between columns and around the figure
LABEL_SIZE = 22  # font size of the method names: readable when the figure is shown at half size
CAPTION_SIZE = 18
MIN_COLUMN = 200  # narrow images are enlarged so their labels still fit
MARK_COLOUR = (230, 30, 30)
TEXT_COLOUR = (20, 20, 20)
STRIP_COLOUR = (236, 236, 236)


@dataclass(frozen=True)
class Panel:
    """One method's result: its name, its image (uint8 H x W x 3) and an optional line of scores."""

    label: str
    image: np.ndarray
    caption: str = ""


class Box(NamedTuple):
    """A rectangle of the figure: left, top, width, height."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Figure:
    """The picture, the panels it shows, and where its parts are: each column's whole-image view and its
    enlarged window."""

    image: Image.Image
    crop: Crop
    overviews: tuple[Box, ...]
    zooms: tuple[Box, ...]
    panels: tuple[Panel, ...]


@cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own scalable font (no system font needed); its small bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def fitted_text(text: str, width: int, size: int) -> tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont]:
    """`text` in the largest font (down to 10 px) that fits `width`, shortened with an ellipsis if none does."""
    for points in range(size, 9, -1):
        face = font(points)
        if face.getlength(text) <= width:
            return text, face
    face = font(10)
    while len(text) > 1 and face.getlength(text + "...") > width:
        text = text[:-1]
    return text + "...", face


def centred(
    draw: ImageDraw.ImageDraw,
    centre: tuple[int, int],
    text: str,
    face: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """Text centred on a point, measured rather than anchored (Pillow's bitmap font takes no anchor)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    draw.text(
        (centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2), text, fill=TEXT_COLOUR, font=face
    )


def render(panels: Sequence[Panel], crop: Crop, *, column: int = 320) -> Figure:
    """Draw `panels` side by side, each `column` pixels wide (at least MIN_COLUMN), the window `crop` of
    every image outlined in its view and enlarged (nearest neighbour: the pixels as they are) below it."""
    if not panels:
        raise ConfigError("nothing to draw: no panels")
    shape = panels[0].image.shape
    if any(panel.image.shape != shape for panel in panels):
        raise ConfigError("every panel must have the same size (the same scene at the same scale)")
    crop = checked_crop(crop, shape)
    height, width = shape[:2]
    column = max(MIN_COLUMN, int(column))
    view_height = max(1, round(height * column / width))
    label_height = LABEL_SIZE + 12
    caption_height = CAPTION_SIZE + 12 if any(panel.caption for panel in panels) else 0
    figure = Image.new(
        "RGB",
        (
            GAP + len(panels) * (column + GAP),
            GAP + label_height + view_height + GAP + column + caption_height + GAP,
        ),
        "white",
    )
    draw = ImageDraw.Draw(figure)
    factor = column / width
    outline = [
        round(crop.x * factor),
        round(crop.y * view_height / height),
        max(round((crop.x + crop.size) * factor) - 1, 0),
        max(round((crop.y + crop.size) * view_height / height) - 1, 0),
    ]
    overviews, zooms = [], []
    for index, panel in enumerate(panels):
        left = GAP + index * (column + GAP)
        draw.rectangle([left, GAP, left + column - 1, GAP + label_height - 1], fill=STRIP_COLOUR)
        text, face = fitted_text(panel.label, column - 12, LABEL_SIZE)
        centred(draw, (left + column // 2, GAP + label_height // 2), text, face)
        top = GAP + label_height
        source = Image.fromarray(np.ascontiguousarray(panel.image[..., :3]))
        shrink = Image.Resampling.LANCZOS if column < width else Image.Resampling.NEAREST
        view = source.resize((column, view_height), shrink)
        ImageDraw.Draw(view).rectangle(outline, outline=MARK_COLOUR, width=2)
        figure.paste(view, (left, top))
        overviews.append(Box(left, top, column, view_height))
        top += view_height + GAP
        zoom = Image.fromarray(cut(panel.image[..., :3], crop)).resize(
            (column, column), Image.Resampling.NEAREST
        )
        figure.paste(zoom, (left, top))
        zooms.append(Box(left, top, column, column))
        if panel.caption:
            text, face = fitted_text(panel.caption, column - 8, CAPTION_SIZE)
            centred(draw, (left + column // 2, top + column + caption_height // 2), text, face)
    return Figure(figure, crop, tuple(overviews), tuple(zooms), tuple(panels))
