"""`upscale()` and `load_model()`: from any image to its upscaled twin in one call.

The glue of the other rooms: weights give a network, imaging turns the input into float planes and the
result back into the kind it came as, tiling runs the network piece by piece. Nothing here prints; the only
terminal output is a tqdm bar when the caller asks for `progress=True`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from mma.errors import CheckpointError, ConfigError, ImageReadError
from mma.imaging.io import ImageMeta, array_to_float, array_to_pil, pil_to_float, read_image
from mma.tiling import Progress, upscale_tiled

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
ModelLike = Union[str, "os.PathLike[str]", nn.Module]

DEFAULT_OVERLAP = 32
# Inference memory per input pixel and feature channel, with a margin: ~28 KB a pixel for MMA-T, where
# bench_model.py measures far less (docs/benchmarks.md); auto tiles also use only a share of free memory.
BYTES_PER_PIXEL_PER_FEATURE = 600
# ITU-R BT.601 luma, as Pillow's RGB -> L, to bring a grey image back from the model's RGB output.
LUMA = (0.299, 0.587, 0.114)

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is CUDA, then Apple MPS, then CPU; an explicit device must exist here."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but this torch sees no CUDA GPU")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but Apple MPS is not available here")
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on CUDA GPUs that support it, else fp16 on GPUs; fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    name = str(dtype).lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
    return _DTYPES[name]


def load_model(model: str | os.PathLike[str] = "mma-t", scale: int | None = 4, *,
               device: str | torch.device = "auto", dtype: str | torch.dtype | None = None) -> nn.Module:
    """A ready `eval()` network from a registry name, a weights file/folder or a Hub repo id `owner/name`.

    Repeated calls with the same arguments return the same cached instance (a changed file is reloaded).
    `scale=None` accepts whatever scale a file holds; otherwise it must match.
    """
    target = resolve_device(device)
    chosen = resolve_dtype(dtype, target)
    path = Path(os.fspath(model)).expanduser()
    stamp: tuple[Any, ...] = ()
    if path.exists():
        info = path.stat()
        stamp, model = (info.st_mtime_ns, info.st_size), str(path.resolve())
    return _load_cached(os.fspath(model), stamp, scale, str(target), chosen)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, stamp: tuple[Any, ...], scale: int | None, device: str,
                 dtype: torch.dtype) -> nn.Module:
    from mma.weights import model_from_file, resolve_weights  # the weights room pulls in huggingface_hub

    net = model_from_file(resolve_weights(name, scale or 4), device=device, dtype=dtype)
    _check_scale(net, scale, name)
    return net


def _check_scale(net: nn.Module, scale: int | None, label: str) -> int:
    """The network's scale, or ConfigError when the caller asked for another one."""
    own = getattr(net, "scale", None)
    if own is None:
        if scale is None:
            raise ConfigError("this model does not say its scale: pass scale=")
        return int(scale)
    if scale is not None and int(scale) != int(own):
        raise ConfigError(f"{label} upscales x{own}, not x{scale}: ask for scale {own} or another model")
    return int(own)


def _prepare_module(net: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The caller's module in eval mode on `device`/`dtype`, copied rather than changed when it must move."""
    params = list(net.parameters())
    placed = all(p.device.type == device.type and p.dtype == dtype for p in params)
    if placed and not net.training:
        return net
    return copy.deepcopy(net).to(device=device, dtype=dtype).eval()


def upscale(image: ImageInput, scale: int | None = 4, model: ModelLike = "mma-t", *,
            tile: int | Literal["auto"] | None = "auto", overlap: int = DEFAULT_OVERLAP,
            device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto",
            alpha: Literal["resize", "model"] = "resize",
            progress: bool | Progress = False) -> Any:
    """Upscale `image` and return it as the same kind: path -> PIL image, PIL -> PIL, numpy -> numpy
    (same layout and dtype), torch (C,H,W) / (B,C,H,W) float -> torch on the same device.

    `model` is a registry name, a weights file, a Hub repo id or an nn.Module. `tile="auto"` sizes tiles
    from free memory; `None`/`0` runs the whole image at once. `alpha="resize"` upscales transparency with
    a bicubic resize, `"model"` runs it through the network as a grey image. `progress` is a callback
    `(done_tiles, total_tiles)` or True for a tqdm bar.
    """
    options: dict[str, Any] = {"tile": tile, "overlap": overlap, "device": device, "dtype": dtype,
                               "alpha": alpha, "progress": progress}
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        pixels, meta = pil_to_float(image)
        return array_to_pil(upscale_pixels(pixels, meta, scale, model, **options), meta)
    if isinstance(image, np.ndarray):
        pixels, meta = array_to_float(image)
        out = upscale_pixels(pixels, meta, scale, model, out_dtype=image.dtype, **options)
        return out[..., 0] if image.ndim == 2 else out
    if isinstance(image, torch.Tensor):
        return _upscale_tensor(image, functools.partial(upscale_pixels, scale=scale, model=model, **options))
    raise ImageReadError(f"cannot upscale a {type(image).__name__}: give a path, PIL image, numpy array or "
                         "torch tensor")


def upscale_pixels(pixels: torch.Tensor, meta: ImageMeta, scale: int | None = 4, model: ModelLike = "mma-t",
                   *, out: np.ndarray | None = None, out_dtype: np.dtype | type | None = None,
                   tile: int | Literal["auto"] | None = "auto", overlap: int = DEFAULT_OVERLAP,
                   device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto",
                   alpha: Literal["resize", "model"] = "resize",
                   progress: bool | Progress = False) -> np.ndarray:
    """`upscale` on decoded planes (as `mma.imaging.io.read_pixels` gives them): float (C, H, W) in [0, 1]
    -> (sH, sW, C) array of `out_dtype` (default: the 8/16-bit type `meta` records), or into `out`."""
    if alpha not in ("resize", "model"):
        raise ConfigError(f"alpha must be 'resize' or 'model', got {alpha!r}")
    target = resolve_device(device)
    chosen = resolve_dtype(dtype, target)
    if isinstance(model, nn.Module):
        scale = _check_scale(model, scale, type(model).__name__)
        net = _prepare_module(model, target, chosen)
    else:
        net = load_model(model, scale, device=target, dtype=chosen)
        scale = _check_scale(net, scale, os.fspath(model))
    if out is None:
        channels, height, width = pixels.shape
        out = np.empty((height * scale, width * scale, channels), dtype=out_dtype or meta.dtype)
    runner = _TileRunner(net, target, chosen, scale, alpha, meta)
    with contextlib.ExitStack() as stack:
        report: Progress | None = None
        if callable(progress):
            report = progress
        elif progress:
            report = stack.enter_context(TileProgressBar())
        return upscale_tiled(runner, pixels, scale, out, tile=tile, overlap=overlap, progress=report,
                             device=target, bytes_per_pixel=_bytes_per_pixel(net))


def _upscale_tensor(image: torch.Tensor, run: Callable[..., np.ndarray]) -> torch.Tensor:
    """(C,H,W) or (B,C,H,W) float in [0, 1] -> the same layout, device and dtype, `scale` times larger."""
    if not image.is_floating_point() or image.ndim not in (3, 4) or image.shape[-3] not in (1, 2, 3, 4):
        raise ImageReadError(f"expected a float (C,H,W) or (B,C,H,W) tensor with C in 1..4, got "
                             f"{image.dtype} of shape {tuple(image.shape)}")
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ImageReadError(f"zero-size image tensor of shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ImageReadError("image tensor contains NaN or infinite values")
    batch = image.reshape(-1, *image.shape[-3:]).detach().to("cpu", torch.float32).clamp(0, 1)
    channels = batch.shape[1]
    meta = ImageMeta(3 if channels >= 3 else 1, channels in (2, 4), 8)
    first = torch.from_numpy(run(batch[0], meta, out_dtype=np.float32)).permute(2, 0, 1)
    result = torch.empty(len(batch), *first.shape)  # the scale is known once the first image is done
    result[0] = first
    for index in range(1, len(batch)):
        run(batch[index], meta, out=result[index].numpy().transpose(1, 2, 0))  # written in place
    return result.reshape(*image.shape[:-2], *result.shape[-2:]).to(image.device, image.dtype)


def _bytes_per_pixel(net: nn.Module) -> int:
    config = getattr(net, "config", None)
    features = getattr(config, "num_feat", 64)
    return BYTES_PER_PIXEL_PER_FEATURE * int(features)


class _TileRunner:
    """The tile function handed to tiling: colour through the network, grey via RGB, alpha on its own.

    A half-precision result with NaN/Inf is recomputed in float32 (with one warning) and float32 is kept
    for the rest of the run.
    """

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype, scale: int, alpha: str,
                 meta: ImageMeta) -> None:
        self.net, self.device, self.dtype, self.scale, self.alpha_mode = net, device, dtype, scale, alpha
        self.channels, self.alpha = meta.channels, meta.alpha

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        parts = [self._through_model(tile[:, :self.channels])]
        if self.alpha:
            mask = tile[:, self.channels:]
            parts.append(self._through_model(mask) if self.alpha_mode == "model" else self._resize(mask))
        return torch.cat(parts, 1)

    def _resize(self, mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(mask, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def _through_model(self, planes: torch.Tensor) -> torch.Tensor:
        grey = planes.shape[1] == 1
        result = self._forward(planes.expand(-1, 3, -1, -1) if grey else planes)
        if grey:
            result = (result * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return result

    @torch.inference_mode()
    def _forward(self, planes: torch.Tensor) -> torch.Tensor:
        result = self.net(planes.to(self.device, self.dtype)).float().cpu()
        if self.dtype != torch.float32 and not torch.isfinite(result).all():
            warnings.warn(f"{self.dtype} gave NaN/Inf; recomputing in float32 (slower, same result)",
                          RuntimeWarning, stacklevel=2)
            self.net, self.dtype = copy.deepcopy(self.net).float(), torch.float32
            result = self.net(planes.to(self.device, self.dtype)).cpu()
        if not torch.isfinite(result).all():
            raise CheckpointError("the model produced NaN/Inf in float32: its weights are probably damaged")
        return result


class TileProgressBar:
    """A tiling progress callback drawing a tqdm bar (on stderr), closed on exit; restarts when a retry
    with smaller tiles changes the total. Extra keyword arguments go to tqdm (desc, position, ...)."""

    def __init__(self, **options: Any) -> None:
        self.options = {"unit": "tile", "leave": False, "desc": "upscale", **options}
        self.bar: Any = None

    def __enter__(self) -> Progress:
        return self.update

    def update(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self.bar is None or self.bar.total != total or done < self.bar.n:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, **self.options)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.close()
