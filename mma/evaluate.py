"""Score an upscaler on benchmark folders exactly as SR papers do (`mma eval` and training validation).

Why: a paper's PSNR is only comparable when every step matches its protocol. Here: HR images cropped to
a multiple of the scale, LR inputs made with MATLAB-compatible bicubic `imresize` (uint8), the upscaler's
uint8 output scored on the Y channel with `crop_border = scale` (see `mma.metrics`). With no upscaler the
baseline is MATLAB bicubic upscaling of the uint8 LR.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mma.errors import ConfigError, ImageReadError
from mma.imaging.io import read_image, write_image
from mma.imaging.resize import imresize, modcrop
from mma.metrics import psnr, ssim

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".webp")

Upscaler = Callable[[np.ndarray], np.ndarray]
Keeper = Callable[[Path, np.ndarray, np.ndarray], None]  # (HR file, modcropped HR, SR): e.g. a report's crops


@dataclass(frozen=True)
class ImageScore:
    """One image: its file name, PSNR (dB), SSIM, and seconds spent in the upscaler."""

    name: str
    psnr: float
    ssim: float
    seconds: float


@dataclass(frozen=True)
class Summary:
    """A dataset's mean scores without the per-image rows (what training logs and checkpoints keep)."""

    name: str
    images: int
    psnr: float
    ssim: float
    seconds: float


@dataclass(frozen=True)
class DatasetResult:
    """Scores of one dataset folder at one scale; the dataset figures are means over its images."""

    name: str
    scale: int
    images: tuple[ImageScore, ...]

    @property
    def psnr(self) -> float:
        return float(np.mean([image.psnr for image in self.images]))

    @property
    def ssim(self) -> float:
        return float(np.mean([image.ssim for image in self.images]))

    @property
    def seconds(self) -> float:
        return float(sum(image.seconds for image in self.images))

    def summary(self) -> Summary:
        return Summary(self.name, len(self.images), self.psnr, self.ssim, self.seconds)


def dataset_name(path: str | Path) -> str:
    """`Set5` for both `.../Set5` and `.../Set5/HR`."""
    path = Path(path).resolve()
    return path.parent.name if path.name == "HR" else path.name


def find_images(path: str | Path) -> list[Path]:
    """HR images (png/bmp/jpg/webp) of a dataset folder, sorted; its `HR` subfolder is used when present."""
    path = Path(path)
    if not path.is_dir():
        raise ImageReadError(f"{path}: no such dataset directory")
    folder = path / "HR" if (path / "HR").is_dir() else path
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageReadError(f"{folder}: no HR images ({', '.join(IMAGE_SUFFIXES)}) in this directory")
    return images


def read_rgb(path: Path) -> np.ndarray:
    """uint8 HxWx3; a grayscale image becomes three equal channels (as BasicSR reads test images)."""
    return np.asarray(read_image(path).convert("RGB"))


def bicubic_upscaler(scale: int) -> Upscaler:
    """The baseline: MATLAB bicubic upscaling of the uint8 LR image."""
    return lambda lr: imresize(lr, scale)


def evaluate_image(
    name: str, hr: np.ndarray, scale: int, upscaler: Upscaler
) -> tuple[np.ndarray, ImageScore]:
    """Downscale the modcropped `hr`, upscale it back, score it; returns the SR image and its scores."""
    hr = modcrop(hr, scale)
    lr = imresize(hr, 1 / scale)
    start = time.perf_counter()
    sr = upscaler(lr)
    seconds = time.perf_counter() - start
    if not isinstance(sr, np.ndarray) or sr.dtype != np.uint8 or sr.shape != hr.shape:
        got = f"{getattr(sr, 'dtype', type(sr).__name__)} {getattr(sr, 'shape', '')}"
        raise ConfigError(f"{name}: the upscaler must return a uint8 array of shape {hr.shape}, got {got}")
    return sr, ImageScore(name, psnr(sr, hr, scale), ssim(sr, hr, scale), seconds)


def evaluate_dataset(
    path: str | Path,
    scale: int,
    upscaler: Upscaler | None = None,
    *,
    save_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> DatasetResult:
    """Evaluate `upscaler` (uint8 HxWx3 LR -> uint8 HR; None = bicubic) on one dataset folder.

    `save_dir`: each SR image is written as `<save_dir>/<dataset>/<stem>.png`. `progress` is called with
    each image's file name once it is scored.
    """
    scale = checked_scale(scale)
    return evaluate_images(
        dataset_name(path), find_images(path), scale, upscaler, save_dir=save_dir, progress=progress
    )


def checked_scale(scale: object) -> int:
    """Any positive integer scale (bicubic baselines go beyond the network's 2/3/4)."""
    if not isinstance(scale, (int, float)) or int(scale) != scale or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def evaluate_images(
    name: str,
    paths: Sequence[Path],
    scale: int,
    upscaler: Upscaler | None = None,
    *,
    save_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    keep: Keeper | None = None,
) -> DatasetResult:
    """`evaluate_dataset` over a named list of HR image files (a folder's, or images held out of training).

    `keep`, if given, sees each image's modcropped HR and SR once scored (what a report keeps of them)."""
    scale = checked_scale(scale)
    upscaler = upscaler or bicubic_upscaler(scale)
    scores = []
    for image_path in paths:
        hr = read_rgb(image_path)
        sr, score = evaluate_image(image_path.name, hr, scale, upscaler)
        scores.append(score)
        if keep is not None:
            keep(image_path, modcrop(hr, scale), sr)
        if save_dir is not None:
            write_image(Image.fromarray(sr), Path(save_dir) / name / f"{image_path.stem}.png", overwrite=True)
        if progress is not None:
            progress(image_path.name)
    return DatasetResult(name, scale, tuple(scores))
