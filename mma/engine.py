"""The inference engine: the one way the network is run on images, whoever asks.

`mma.upscale`, `mma eval`, training validation, the forward of `mma lam` and the bundling of weights all
go through an `Engine`, so device, precision, threads, the half-precision NaN fallback, tiling and the
batching of tiles are decided here and nowhere else. The engine knows the network only through a
`LoadedModel`: given a name instead, it asks the weights loader (`mma.weights.loaded.load`) for one, and
that is the only file it reads; it writes none.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import nn

from mma.errors import CheckpointError, ConfigError
from mma.heap import reuse_freed_memory
from mma.imaging.io import ImageMeta, array_to_float
from mma.model.network import float32_output
from mma.progress import forward_progress
from mma.runtime import (
    cpu_threads,
    default_threads,
    dtype_name,
    parse_threads,
    resolve_device,
    resolve_dtype,
)
from mma.tiling import Progress, TileFn, parse_memory, upscale_tiled
from mma.weights.loaded import LoadedModel, load

DEFAULT_OVERLAP = 32
# ITU-R BT.601 luma, as Pillow's RGB -> L, to bring a grey image back from the model's RGB output.
LUMA = (0.299, 0.587, 0.114)

# How long the thread policy's choice stands before the engine watches the machine again.
THREADS_RECHECK_S = 30.0

Tile = int | Literal["auto"] | None
Batch = int | Literal["auto"]


class Engine:
    """One model placed on one device in one precision, with a tiling and threading policy.

    `tile`: "auto" (the rows x columns shape that wastes least within the memory budget), None/0 (whole image)
    or a size in input pixels.
    `batch`: tiles per forward, "auto" (as many as fit the budget, at most 16) or a number. `max_memory`: the
    budget of one forward in bytes or as "2G" (default: half of free memory, and on a CPU at most 1 GiB;
    `mma.tiling.memory_budget`). `threads`: CPU threads while the
    engine runs (None: one per idle CPU, see `mma.runtime.default_threads`). `alpha`: "resize" upscales
    transparency with a bicubic resize, "model" runs it through the network as a grey image. A
    half-precision result with NaN/Inf is recomputed in float32 (one warning) and float32 kept after.
    """

    def __init__(
        self,
        model: LoadedModel | nn.Module | str,
        *,
        scale: int | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = "auto",
        threads: int | str | None = None,
        tile: Tile = "auto",
        overlap: int = DEFAULT_OVERLAP,
        batch: Batch = "auto",
        alpha: Literal["resize", "model"] = "resize",
        max_memory: int | str | None = None,
    ) -> None:
        if alpha not in ("resize", "model"):
            raise ConfigError(f"alpha must be 'resize' or 'model', got {alpha!r}")
        if overlap < 0:
            raise ConfigError(f"overlap must be zero or more, got {overlap}")
        self.device = resolve_device(device)
        loaded = load(model, scale)
        self.dtype = supported_dtype(loaded, resolve_dtype(dtype, self.device))
        self.model = loaded.to(self.device, self.dtype)
        self.threads = parse_threads(threads)
        self._policy: tuple[float, int] | None = None  # (when, threads) of the last policy choice
        self.tile, self.overlap, self.batch, self.alpha = tile, overlap, batch, alpha
        self.max_memory = parse_memory(max_memory) if max_memory is not None else None

    @property
    def scale(self) -> int:
        return self.model.scale

    # ----- images ---------------------------------------------------------------------------------------

    def upscale_pixels(
        self,
        pixels: torch.Tensor,
        meta: ImageMeta,
        *,
        out: np.ndarray | None = None,
        out_dtype: np.dtype | type | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Decoded planes, float (C, H, W) in [0, 1] -> (sH, sW, C) array of `out_dtype` (default: the 8/16-bit
        type `meta` records), or written into `out`."""
        if out is None:
            channels, height, width = pixels.shape
            out = np.empty((height * self.scale, width * self.scale, channels), dtype=out_dtype or meta.dtype)
        with self.running(), forward_progress(self.model.network, progress):
            return upscale_tiled(
                self._tile_function(meta),
                pixels,
                self.scale,
                out,
                tile=self.tile,
                overlap=self.overlap,
                batch=self.batch,
                progress=progress,
                device=self.device,
                bytes_per_pixel=self.model.bytes_per_pixel,
                max_memory=self.max_memory,
            )

    def upscale_array(self, image: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """HxW or HxWxC uint8/uint16/float array -> the same layout and dtype, `scale` times larger."""
        pixels, meta = array_to_float(image)
        out = self.upscale_pixels(pixels, meta, out_dtype=image.dtype, progress=progress)
        return out[..., 0] if image.ndim == 2 else out

    # ----- the network ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The engine's thread count and heap policy (on a CPU) for the duration of a run."""
        if self.device.type == "cpu":
            with cpu_threads(self.threads or self._policy_threads()), reuse_freed_memory():
                yield
        else:
            yield

    def _policy_threads(self) -> int:
        """The thread policy's choice, looked up again only after THREADS_RECHECK_S: it watches the machine
        for 50 ms, which would be a real share of the time of small images (`mma eval`, validation)."""
        now = time.monotonic()
        if self._policy is None or now - self._policy[0] > THREADS_RECHECK_S:
            self._policy = (now, default_threads())
        return self._policy[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Float (B, 3, h, w) in [0, 1] anywhere -> float32 (B, 3, sh, sw) on the CPU, never NaN."""
        # float32_output: a half-precision run keeps its float32 last conv; checked where it was computed (on
        # a GPU the check is nearly free)
        with torch.inference_mode(), float32_output():
            result = self.model(images.to(self.device, self.dtype))
            if self.dtype != torch.float32 and not all_finite(result):
                warnings.warn(
                    f"{self.dtype} gave NaN/Inf; recomputing in float32 (slower, same result)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.model, self.dtype = self.model.to(self.device, torch.float32), torch.float32
                result = self.model(images.to(self.device, self.dtype))
            if self.dtype == torch.float32 and not all_finite(result):
                raise CheckpointError(
                    "the model produced NaN/Inf in float32: its weights are probably damaged"
                )
        return result.float().cpu()

    def network_for_gradients(self) -> nn.Module:
        """The placed network itself, for callers that differentiate through it (LAM)."""
        return self.model.network

    def _tile_function(self, meta: ImageMeta) -> TileFn:
        """Colour through the network, grey via RGB and back to luma, alpha resized or through the network."""
        colour, has_alpha = meta.channels, meta.alpha

        def through_model(planes: torch.Tensor) -> torch.Tensor:
            if planes.shape[1] == 3:
                return self.forward(planes)
            rgb = self.forward(planes.expand(-1, 3, -1, -1))
            return (rgb * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)

        def run(tiles: torch.Tensor) -> torch.Tensor:
            parts = [through_model(tiles[:, :colour])]
            if has_alpha:
                mask = tiles[:, colour:]
                parts.append(
                    through_model(mask)
                    if self.alpha == "model"
                    else nn.functional.interpolate(
                        mask, scale_factor=self.scale, mode="bicubic", align_corners=False
                    )
                )
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # no copy without alpha

        return run


def supported_dtype(model: LoadedModel, dtype: torch.dtype) -> torch.dtype:
    """`dtype`, or float32 with one warning when the model does not declare it among its precisions (as
    resolve_dtype falls back when the hardware lacks a half precision)."""
    if model.supports(dtype):
        return dtype
    warnings.warn(
        f"{model.source.location} does not run in {dtype_name(dtype)} (it declares "
        f"{', '.join(model.precisions)}): using fp32",
        RuntimeWarning,
        stacklevel=3,
    )
    return torch.float32


def all_finite(values: torch.Tensor) -> bool:
    """True when no value is NaN or infinite. One sum instead of a mask of every element: any NaN or Inf
    makes the sum non-finite (finite values could only overflow it far outside an image's range, and such an
    output is as unusable), at a fraction of the memory traffic on large outputs."""
    return bool(torch.isfinite(values.sum(dtype=torch.float32)))


def paper_engine(
    model: LoadedModel | nn.Module | str,
    *,
    scale: int | None = None,
    device: str | torch.device = "auto",
    tile: int | None = None,
    threads: int | str | None = None,
) -> Engine:
    """The engine of the papers' protocol: float32, whole images unless `tile` is given (`mma eval`,
    training validation and bundling use it, so their scores are one number)."""
    return Engine(
        model, scale=scale, device=device, dtype="fp32", threads=threads, tile=tile or None, batch=1
    )
