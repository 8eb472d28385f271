"""Run any image-to-image function on overlapping tiles and blend them without seams.

Knows nothing of the network: `fn` maps a float (B, C, h, w) batch of tiles to (B, C', s*h, s*w). Three small
steps, kept apart so each can be tested alone:

* plan: tiles of one even size per axis, spread evenly so there is no thin remainder tile;
* blend: a raised-cosine window per tile, normalised so the weights sum to one at every output pixel.
  The outer quarter of every overlap gets zero weight, so a model whose receptive field reaches
  r input pixels is reproduced exactly when ``overlap >= 4 * r``;
* stitch: tiles are accumulated one row of tiles at a time in a float32 band on the CPU and written
  into the caller's integer (or float) output as soon as a band is final, so memory follows the
  output's own size, not a full-size float32 buffer, and nothing is stitched on the GPU.

`tile="auto"` picks the tile shape (rows x columns, not always square) that sends the fewest input pixels
through the network while each tile's estimated footprint fits the memory budget of one forward, and halves
it after an out-of-memory error. The budget is a share of free memory, and on a CPU also at most
`DEFAULT_CPU_MAX_MEMORY` unless the caller gives `max_memory`: a whole large image in one forward only saves
the tiles' overlap, while its memory would press on everything else the user runs (docs/tiling.md).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mma.errors import ConfigError

TileFn = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]

log = logging.getLogger(__name__)

MIN_AUTO_TILE = 16
MAX_AUTO_TILE = 1024
# Share of the free memory one forward may use (the estimate per pixel has its own margin).
MEMORY_SHARE = 0.5
MAX_AUTO_BATCH = 16
# A CPU forward's default memory budget: a 640x480 photo at x4 with MMA-T in one tile (docs/benchmarks.md,
# "CPU pace"); `max_memory` (`--max-memory`) raises or lowers it.
DEFAULT_CPU_MAX_MEMORY = 1 << 30
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class AxisPlan:
    """Where the tiles sit along one axis and how much each output position trusts each tile."""

    size: int  # tile extent in input pixels
    starts: tuple[int, ...]  # first input pixel of every tile
    windows: tuple[torch.Tensor, ...]  # per tile, float32 weights over its scale*size output pixels


def plan_axis(length: int, tile: int, overlap: int, scale: int) -> AxisPlan:
    """Tiles covering [0, length): one tile when it fits, else even-sized tiles spread evenly."""
    if length < 1 or scale < 1:
        raise ConfigError(f"cannot tile a length of {length} at scale {scale}")
    if overlap < 0:
        raise ConfigError(f"overlap must be zero or more, got {overlap}")
    if length <= tile:
        return AxisPlan(length, (0,), (torch.ones(length * scale),))
    if tile < 2:
        raise ConfigError(f"tile size must be at least 2 pixels, got {tile}")
    size = tile - tile % 2
    overlap = min(overlap, size // 2)
    count = _tile_count(length, tile, overlap)
    # Integer division spreads the slack evenly; every step is <= size - overlap.
    starts = tuple(i * (length - size) // (count - 1) for i in range(count))
    return AxisPlan(size, starts, _windows(starts, size, length, overlap * scale, scale))


def _rising_edge(extent: int, overlap: int) -> torch.Tensor:
    """0 over the first quarter of the overlap, raised cosine over its middle half, then 1."""
    margin = overlap // 4
    ramp = overlap - 2 * margin
    t = torch.arange(extent, dtype=torch.float64)
    edge = torch.ones(extent, dtype=torch.float64)
    if ramp > 0:
        rising = torch.sin(0.5 * math.pi * (t - margin + 0.5) / ramp) ** 2
        edge = torch.where(t < margin + ramp, rising, edge)
        edge = torch.where(t < margin, torch.zeros_like(edge), edge)
    return edge


def _windows(
    starts: tuple[int, ...], size: int, length: int, overlap: int, scale: int
) -> tuple[torch.Tensor, ...]:
    """Per-tile weights at output resolution, divided by their sum so they add up to one everywhere."""
    extent = size * scale
    edge = _rising_edge(extent, overlap)
    raw = []
    for index in range(len(starts)):
        weight = torch.ones(extent, dtype=torch.float64)
        if index > 0:
            weight = weight * edge
        if index < len(starts) - 1:
            weight = weight * edge.flip(0)
        raw.append(weight)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, weight in zip(starts, raw):
        total[start * scale : start * scale + extent] += weight
    return tuple(
        (weight / total[start * scale : start * scale + extent]).float() for start, weight in zip(starts, raw)
    )


def run_tiles(
    fn: TileFn,
    image: torch.Tensor,
    scale: int,
    out: np.ndarray,
    *,
    tile: int | tuple[int, int] | None,
    overlap: int,
    progress: Progress | None = None,
    batch: int = 1,
) -> np.ndarray:
    """Upscale a float (C, H, W) CPU image through `fn` tile by tile into `out` (sH, sW, C').

    `out` decides the result's type: uint8/uint16 are rounded from [0, 1], floats are clipped to [0, 1].
    `tile` None or 0 runs the whole image as one tile; a (rows, columns) pair gives each axis its own size.
    `progress(done, total)` is called with 0 done first, then after each tile. `batch` tiles go through
    `fn` together (all tiles of a plan have one size, so they stack); the result does not depend on it.
    """
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    _, height, width = image.shape
    if out.shape[:2] != (height * scale, width * scale):
        raise ValueError(f"output shape {out.shape} does not match {height}x{width} at x{scale}")
    whole = max(height, width)
    tile_rows, tile_cols = tile if isinstance(tile, tuple) else (tile, tile)
    rows = plan_axis(height, tile_rows or whole, overlap, scale)
    cols = plan_axis(width, tile_cols or whole, overlap, scale)
    channels, total = out.shape[2], len(rows.starts) * len(cols.starts)
    if progress is not None:
        progress(0, total)  # before the first forward, so a display knows the total while it runs
    results = _tile_results(fn, image, rows, cols, batch, channels, scale)
    band = torch.zeros(channels, 0, width * scale)
    band_top = 0  # output row held by band[:, 0]
    done = 0
    for i, y0 in enumerate(rows.starts):
        bottom = (y0 + rows.size) * scale
        band = torch.cat([band, torch.zeros(channels, bottom - band_top - band.shape[1], width * scale)], 1)
        top = y0 * scale - band_top
        for j, x0 in enumerate(cols.starts):
            result = next(results)
            weight = rows.windows[i][:, None] * cols.windows[j][None, :]
            left = x0 * scale
            band[:, top : top + rows.size * scale, left : left + cols.size * scale] += result * weight
            done += 1
            if progress is not None:
                progress(done, total)
        final = rows.starts[i + 1] * scale if i + 1 < len(rows.starts) else height * scale
        _store(band[:, : final - band_top], out[band_top:final])
        band, band_top = band[:, final - band_top :].clone(), final
    return out


def _tile_results(
    fn: TileFn, image: torch.Tensor, rows: AxisPlan, cols: AxisPlan, batch: int, channels: int, scale: int
) -> Iterator[torch.Tensor]:
    """Each tile's result in row-major order, computed `batch` tiles per call of `fn`."""
    places = [(y0, x0) for y0 in rows.starts for x0 in cols.starts]
    for first in range(0, len(places), batch):
        group = places[first : first + batch]
        pieces = torch.stack([image[:, y0 : y0 + rows.size, x0 : x0 + cols.size] for y0, x0 in group])
        result = _checked(fn(pieces), len(group), channels, rows.size * scale, cols.size * scale)
        yield from result


def _checked(result: torch.Tensor, count: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The tile results on the CPU as float32 (B, C', sh, sw), or ConfigError when their shape is wrong."""
    if tuple(result.shape) != (count, channels, height, width):
        raise ConfigError(
            f"the model returned shape {tuple(result.shape)} for tiles that should give "
            f"({count}, {channels}, {height}, {width}): is the scale right?"
        )
    return result.detach().to("cpu", torch.float32)


def _store(values: torch.Tensor, dest: np.ndarray) -> None:
    """Write a finished band (C, h, W) into dest (h, W, C), rounding for integer outputs."""
    values = values.clamp(0.0, 1.0)
    if np.issubdtype(dest.dtype, np.integer):
        values = values.mul_(np.iinfo(dest.dtype).max).round_()
    dest[...] = values.permute(1, 2, 0).numpy()


def upscale_tiled(
    fn: TileFn,
    image: torch.Tensor,
    scale: int,
    out: np.ndarray,
    *,
    tile: int | Literal["auto"] | None = "auto",
    overlap: int = 32,
    batch: int | Literal["auto"] = 1,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    bytes_per_pixel: int = 16384,
    max_memory: int | str | None = None,
) -> np.ndarray:
    """`run_tiles` with automatic sizes: `tile="auto"` the largest that fits the memory budget of one forward
    on `device` (see `memory_budget`), `batch="auto"` as many tiles per call as the budget holds. After an
    out-of-memory error the batch is halved first, then an automatic tile. `bytes_per_pixel` is the caller's
    estimate of the memory `fn` needs per input pixel.
    """
    if tile != "auto" and (not isinstance(tile, (int, type(None))) or (tile is not None and tile < 0)):
        raise ConfigError(f"tile must be 'auto', 0 / None (whole image) or a size in pixels, got {tile!r}")
    if batch != "auto" and (not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"batch must be 'auto' or a number of tiles (1 or more), got {batch!r}")
    budget = memory_budget(device, max_memory)
    height, width = image.shape[1:]
    size: int | tuple[int, int] | None = tile or None
    if tile == "auto":
        size = auto_tile_shape(budget, bytes_per_pixel, height, width, overlap)
    rows, cols = size if isinstance(size, tuple) else (size or height, size or width)
    count = batch if batch != "auto" else auto_batch(budget, bytes_per_pixel, (rows, cols))
    while True:
        try:
            return run_tiles(
                fn, image, scale, out, tile=size, overlap=overlap, progress=progress, batch=count
            )
        except Exception as exc:
            smallest = isinstance(size, tuple) and max(size) <= MIN_AUTO_TILE
            if not is_out_of_memory(exc) or (count == 1 and (tile != "auto" or smallest)):
                raise
        if count > 1:
            count = count // 2
        elif isinstance(size, tuple):
            size = (max(MIN_AUTO_TILE, size[0] // 2), max(MIN_AUTO_TILE, size[1] // 2))
        log.info("out of memory: retrying with %s-pixel tiles, %d per batch", size, count)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def memory_budget(device: torch.device | str | None = None, max_memory: int | str | None = None) -> int:
    """Bytes one forward may use: a share of the free memory on `device`, at most `max_memory` when given
    (bytes or a size such as "2G"), else on a CPU at most DEFAULT_CPU_MAX_MEMORY."""
    share = int(available_memory(device) * MEMORY_SHARE)
    if max_memory is not None:
        return min(share, parse_memory(max_memory))
    if torch.device(device or "cpu").type == "cpu":
        return min(share, DEFAULT_CPU_MAX_MEMORY)
    return share


def parse_memory(value: int | str) -> int:
    """Bytes from an integer or a size with an optional binary unit: 512M, 1.5G, 2GiB, 1073741824."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in _UNITS and not text[-1:].isdigit() else ""
        try:
            amount = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except (ValueError, OverflowError):  # not a number, or inf
            raise ConfigError(f"max memory must be a size such as 512M or 2G, got {value!r}") from None
    if amount <= 0:
        raise ConfigError(f"max memory must be more than zero, got {value!r}")
    return amount


def auto_batch(budget_bytes: int, bytes_per_pixel: int, tile: int | tuple[int, int]) -> int:
    """Tiles per forward: as many `tile` (a side, or rows x columns) as the budget holds, at most
    MAX_AUTO_BATCH."""
    rows, cols = tile if isinstance(tile, tuple) else (tile, tile)
    fits = int(max(budget_bytes, 0) // max(bytes_per_pixel * rows * cols, 1))
    return max(1, min(MAX_AUTO_BATCH, fits))


def auto_tile(budget_bytes: int, bytes_per_pixel: int) -> int:
    """Largest tile (a multiple of 16) whose estimated footprint fits the budget."""
    pixels = max(budget_bytes, 0) / max(bytes_per_pixel, 1)
    side = math.isqrt(int(pixels)) // 16 * 16
    return min(MAX_AUTO_TILE, max(MIN_AUTO_TILE, side))


def auto_tile_shape(
    budget_bytes: int, bytes_per_pixel: int, height: int, width: int, overlap: int
) -> tuple[int, int]:
    """The (rows, columns) tile that sends the fewest input pixels through the network (overlaps count
    twice), each tile within the budget and at most MAX_AUTO_TILE a side; fewer tiles break ties.

    A 640x480 photo whose whole does not fit thus runs as two 480x336 tiles (1.05x its pixels), where
    square 304-pixel tiles would take six (1.8x). Falls back to MIN_AUTO_TILE squares when nothing fits.
    """
    pixels = max(budget_bytes, 0) // max(bytes_per_pixel, 1)
    best: tuple[tuple[int, int], tuple[int, int]] | None = None  # ((cost, tiles), (rows, cols))
    for down in range(1, height + 1):
        rows = _tile_side(height, down, overlap)
        if rows < MIN_AUTO_TILE and down > 1:
            break
        if rows > MAX_AUTO_TILE:
            continue
        for across in range(1, width + 1):
            cols = _tile_side(width, across, overlap)
            if cols < MIN_AUTO_TILE and across > 1:
                break
            if cols <= MAX_AUTO_TILE and rows * cols <= pixels:  # more tiles across would only cost more
                key = (down * across * rows * cols, down * across)
                if best is None or key < best[0]:
                    best = (key, (rows, cols))
                break
    return best[1] if best is not None else (MIN_AUTO_TILE, MIN_AUTO_TILE)


def _tile_side(length: int, count: int, overlap: int) -> int:
    """The smallest tile `plan_axis` covers `length` with in `count` tiles (the whole length for one)."""
    if count == 1:
        return length
    side = -(-(length + (count - 1) * overlap) // count)
    side += side % 2
    while _tile_count(length, side, overlap) > count:  # only when the overlap is cut to half a tile
        side += 2
    return side


def _tile_count(length: int, tile: int, overlap: int) -> int:
    """How many tiles `plan_axis` lays along `length`."""
    if length <= tile:
        return 1
    size = tile - tile % 2
    overlap = min(overlap, size // 2)
    return 1 + math.ceil((length - size) / (size - overlap))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures, however the backend spells them."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def available_memory(device: torch.device | str | None = None) -> int:
    """Free bytes on `device`: CUDA's own count, else the system's available RAM (cgroup-aware)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        with contextlib.suppress(AttributeError, RuntimeError):
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return _system_memory()


def _system_memory() -> int:
    """MemAvailable (Linux), capped by a cgroup v2 limit; sysconf elsewhere; 2 GiB when unknown."""
    candidates = []
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    if limit.exists() and used.exists():
        text = limit.read_text().strip()
        if text.isdigit():
            candidates.append(int(text) - int(used.read_text().strip()))
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            candidates.append(2 << 30)
    return max(0, min(candidates))
