"""One image through bicubic and each model, as a comparison figure (`mma compare`, the README's figure).

Given the high-resolution truth (`hr=True`), the image is first reduced as `mma eval` does (modcrop, MATLAB
bicubic), every result is scored against it with the papers' PSNR/SSIM, and the truth gets a column of its
own; otherwise the image itself is the input and the figure shows what each method makes of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mma.errors import ConfigError
from mma.report.figure import Figure, Panel, render
from mma.report.regions import Crop, largest_difference

BICUBIC = "bicubic"
TRUTH = "HR (truth)"
DEFAULT_MODELS = ("mma-t",)

Upscaler = Callable[[np.ndarray], np.ndarray]


def label_for(model: str) -> str:
    """How a method is named in figures and reports: a weights file by its file name, never its folders."""
    path = Path(model).expanduser()
    return path.name if model != BICUBIC and path.exists() else model


def zoom_size(shape: Sequence[int]) -> int:
    """Default side of the zoomed window: a quarter of the shorter side, from 24 to 128 pixels."""
    return max(24, min(128, min(int(shape[0]), int(shape[1])) // 4))


def model_upscalers(
    models: Sequence[str], scale: int | None, device: str = "auto", threads: int | str | None = None
) -> tuple[int, list[tuple[str, Upscaler]]]:
    """Load every model (all before any runs, so a bad name fails in seconds) and agree on one scale.

    `scale` None: the models' own (4 for bare registry names); models of different scales are refused.
    Models run as `mma eval` runs them (float32, whole image), so the figure's scores are eval's scores.
    """
    from mma.api import load_model
    from mma.engine import paper_engine

    loaded = [
        (name, load_model(name, scale, device=device, dtype="fp32")) for name in models if name != BICUBIC
    ]
    scales = {model.scale for _, model in loaded}
    if len(scales) > 1:
        listed = ", ".join(f"{label_for(name)} x{model.scale}" for name, model in loaded)
        raise ConfigError(f"the models have different scales ({listed}); compare models of one scale")
    chosen = scale if scale is not None else (scales.pop() if scales else 4)
    upscalers = [
        (name, paper_engine(model, scale=chosen, device=device, threads=threads).upscale_array)
        for name, model in loaded
    ]
    return chosen, upscalers


def compare_image(
    image: str | os.PathLike[str] | np.ndarray,
    scale: int | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    hr: bool = False,
    crop: Crop | None = None,
    zoom: int | None = None,
    column: int = 320,
    device: str = "auto",
    threads: int | str | None = None,
) -> Figure:
    """The figure of bicubic beside each of `models` (registry names, weights files; `bicubic` is always
    shown first), with the window `crop` (output pixels) or else the `zoom`-sided window where the results
    differ most enlarged under each; `hr=True` scores each against the input, which is the truth."""
    from mma.evaluate import read_rgb
    from mma.imaging.resize import imresize, modcrop
    from mma.metrics import psnr, ssim

    pixels = read_rgb(Path(image)) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ConfigError(f"the image must be uint8 H x W x 3, got {pixels.dtype} {pixels.shape}")
    chosen, upscalers = model_upscalers(models, scale, device, threads)
    if chosen < 2:
        raise ConfigError(f"scale {chosen}: the factor to enlarge by; use 2, 3 or 4")
    truth = modcrop(pixels, chosen) if hr else None
    if truth is not None and min(truth.shape[:2]) < chosen:
        raise ConfigError(
            f"the image ({pixels.shape[1]}x{pixels.shape[0]}) is smaller than the scale {chosen}"
        )
    low = imresize(truth, 1 / chosen) if truth is not None else pixels
    results = [(BICUBIC, imresize(low, chosen))] + [(name, run(low)) for name, run in upscalers]

    def caption(result: np.ndarray) -> str:
        if truth is None:
            return ""
        return f"{psnr(result, truth, chosen):.2f} dB / {ssim(result, truth, chosen):.4f}"

    panels = [
        Panel(
            f"{label_for(name)} x{chosen}" if name != BICUBIC else f"bicubic x{chosen}",
            result,
            caption(result),
        )
        for name, result in results
    ]
    if truth is not None:
        panels.append(Panel(TRUTH, truth, "PSNR / SSIM (Y)"))
    if crop is None:
        crop = largest_difference([panel.image for panel in panels], zoom or zoom_size(panels[0].image.shape))
    return render(panels, crop, column=column)
