"""`upscale()` and `load_model()`: from any image to its upscaled twin in one call.

The public face of the layers below: the weights loader gives a LoadedModel, the engine runs it (device,
precision, threads, tiles), imaging turns the input into float planes and the result back into the kind it
came as. Nothing here prints; the only terminal output is progress (mma.progress) when the caller asks for
`progress=True`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from mma.engine import DEFAULT_OVERLAP, LUMA, Batch, Engine, Tile
from mma.errors import ImageReadError
from mma.imaging.io import FORMATS as OUTPUT_FORMATS
from mma.imaging.io import (
    ImageMeta,
    array_to_pil,
    check_unit_range,
    format_for,
    made_by_mma,
    pil_to_float,
    read_image,
    read_pixels,
    software_tag,
    write_image,
    write_pixels,
)
from mma.progress import TileProgressBar
from mma.runtime import resolve_device, resolve_dtype
from mma.tiling import Progress
from mma.weights.cache import load_cached
from mma.weights.loaded import LoadedModel, load
from mma.weights.registry import ModelInfo, catalogue

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
ModelLike = Union[str, "os.PathLike[str]", nn.Module, LoadedModel]

__all__ = [
    "DEFAULT_OVERLAP",
    "LUMA",
    "OUTPUT_FORMATS",
    "LoadedModel",
    "ModelInfo",
    "TileProgressBar",
    "format_for",
    "list_models",
    "load_model",
    "made_by_mma",
    "make_engine",
    "read_image",
    "resolve_device",
    "resolve_dtype",
    "software_tag",
    "upscale",
    "upscale_file",
    "upscale_pixels",
    "upscale_with",
    "write_image",
]


def list_models() -> list[ModelInfo]:
    """Every registry model: name with tag, scale, parameters, offline or not, source, measured scores."""
    return catalogue()


def load_model(
    model: ModelLike = "mma-t",
    scale: int | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """A LoadedModel (network, config, source with sha256) from a registry name (`mma-t`, `mma-t-x4`,
    `mma-t-x4.t91-bsds200`), a weights file, a Hub-layout folder or a Hub repo id `owner/name[@revision]`.

    `scale=None` takes the scale the weights hold (4 for a bare registry name); otherwise it must match.
    Repeated calls with the same arguments return the same cached instance (a changed file is reloaded).
    """
    target = resolve_device(device)
    chosen = resolve_dtype(dtype, target)
    if isinstance(model, (nn.Module, LoadedModel)):
        return load(model, scale).to(target, chosen)
    return load_cached(model, scale, target, chosen)


def upscale(
    image: ImageInput,
    scale: int | None = None,
    model: ModelLike = "mma-t",
    *,
    tile: Tile = "auto",
    overlap: int = DEFAULT_OVERLAP,
    batch: Batch = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    threads: int | None = None,
    alpha: Literal["resize", "model"] = "resize",
    progress: bool | Progress = False,
    max_memory: int | str | None = None,
) -> Any:
    """Upscale `image` and return it as the same kind: path -> PIL image, PIL -> PIL, numpy -> numpy
    (same layout and dtype), torch (C,H,W) / (B,C,H,W) float -> torch on the same device.

    `model` is a registry name, a weights file or folder, a Hub repo id, a LoadedModel or an nn.Module;
    `scale` (default: the model's own, 4 for a bare registry name) must match it. `tile="auto"` sizes tiles
    to the memory budget of one forward (`max_memory`, bytes or "2G"; default half of free memory, on a CPU
    at most 1 GiB); `None`/`0` runs the whole image at once. `batch` tiles run per forward ("auto": as
    many as fit the budget). `threads`: CPU threads (default: one per idle CPU). `alpha="resize"` upscales
    transparency with a bicubic resize, `"model"` runs it through the network as a grey image. `progress`
    is a callback `(done_tiles, total_tiles)` or True for `mma.progress.TileProgressBar` on stderr.
    """
    engine = make_engine(
        model,
        scale,
        tile=tile,
        overlap=overlap,
        batch=batch,
        device=device,
        dtype=dtype,
        threads=threads,
        alpha=alpha,
        max_memory=max_memory,
    )
    return upscale_with(engine, image, progress=progress)


def make_engine(
    model: ModelLike = "mma-t",
    scale: int | None = None,
    *,
    tile: Tile = "auto",
    overlap: int = DEFAULT_OVERLAP,
    batch: Batch = "auto",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    threads: int | None = None,
    alpha: Literal["resize", "model"] = "resize",
    max_memory: int | str | None = None,
) -> Engine:
    """The Engine `mma.upscale` runs, for callers that upscale many inputs with one set of options (videos,
    frame streams): a name or path is loaded through the model cache first, in the precision resolved once
    (a refused half precision warns once)."""
    target = resolve_device(device)
    chosen = resolve_dtype(dtype, target)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, scale, device=target, dtype=chosen)
    return Engine(
        model,
        scale=scale,
        device=target,
        dtype=chosen,
        threads=threads,
        tile=tile,
        overlap=overlap,
        batch=batch,
        alpha=alpha,
        max_memory=max_memory,
    )


def upscale_with(engine: Engine, image: ImageInput, *, progress: bool | Progress = False) -> Any:
    """`upscale` with an engine already made (the CLI and batch callers make one for many images)."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        pixels, meta = pil_to_float(image)
        return array_to_pil(upscale_pixels(engine, pixels, meta, progress=progress), meta)
    if isinstance(image, np.ndarray):
        with _progress(progress) as report:
            return engine.upscale_array(image, progress=report)
    if isinstance(image, torch.Tensor):
        return _upscale_tensor(engine, image, progress)
    raise ImageReadError(
        f"cannot upscale a {type(image).__name__}: give a path, PIL image, numpy array or torch tensor"
    )


def upscale_pixels(
    engine: Engine,
    pixels: torch.Tensor,
    meta: ImageMeta,
    *,
    out: np.ndarray | None = None,
    out_dtype: np.dtype | type | None = None,
    progress: bool | Progress = False,
) -> np.ndarray:
    """`Engine.upscale_pixels` with `progress=True` showing `TileProgressBar`."""
    with _progress(progress) as report:
        return engine.upscale_pixels(pixels, meta, out=out, out_dtype=out_dtype, progress=report)


def upscale_file(
    engine: Engine,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool | Progress = False,
    software: str | None = None,
) -> Path:
    """Read `source`, upscale it, write `target` atomically (its format from the suffix; metadata kept;
    `software`, when given, as the EXIF Software tag: see `mma.imaging.io.software_tag`)."""
    pixels, meta = read_pixels(source)
    result = upscale_pixels(engine, pixels, meta, progress=progress)
    return write_pixels(result, meta, target, overwrite=overwrite, software=software)


@contextlib.contextmanager
def _progress(progress: bool | Progress) -> Iterator[Progress | None]:
    """The Progress callback for `progress`: the caller's own, a TileProgressBar (closed on exit) for True, or None."""
    if callable(progress):
        yield progress
    elif progress:
        with TileProgressBar() as report:
            yield report
    else:
        yield None


def _upscale_tensor(engine: Engine, image: torch.Tensor, progress: bool | Progress) -> torch.Tensor:
    """(C,H,W) or (B,C,H,W) float in [0, 1] -> the same layout, device and dtype, `scale` times larger."""
    if not image.is_floating_point() or image.ndim not in (3, 4) or image.shape[-3] not in (1, 2, 3, 4):
        raise ImageReadError(
            f"expected a float (C,H,W) or (B,C,H,W) tensor with C in 1..4, got "
            f"{image.dtype} of shape {tuple(image.shape)}"
        )
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ImageReadError(f"zero-size image tensor of shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ImageReadError("image tensor contains NaN or infinite values")
    batch = image.reshape(-1, *image.shape[-3:]).detach().to("cpu", torch.float32)
    check_unit_range(float(batch.min()), float(batch.max()), "image tensor")
    batch = batch.clamp(0, 1)
    channels = batch.shape[1]
    meta = ImageMeta(3 if channels >= 3 else 1, channels in (2, 4), 8)
    scale = engine.scale
    result = torch.empty(len(batch), channels, batch.shape[2] * scale, batch.shape[3] * scale)
    for index in range(len(batch)):  # written in place
        upscale_pixels(
            engine, batch[index], meta, out=result[index].numpy().transpose(1, 2, 0), progress=progress
        )
    return result.reshape(*image.shape[:-2], *result.shape[-2:]).to(image.device, image.dtype)
