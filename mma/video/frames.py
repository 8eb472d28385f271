"""A stream of frames through the engine, several frames per forward where memory allows.

Frames of a video share one size, so when a whole frame fits in one tile they stack into a batch like the
engine's tiles do (`batch` frames per forward: the engine's own number, or as many as a share of free memory
holds). A frame too large for one tile goes through the engine's tiling alone. Either way each result equals
`Engine.upscale_array` of that frame (stacking changes only the order of float sums, not the rounding
to 8 or 16 bits beyond one level).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from mma.engine import Engine
from mma.imaging.io import array_to_float
from mma.tiling import auto_batch, auto_tile, is_out_of_memory, memory_budget


def frames_per_forward(engine: Engine, height: int, width: int) -> int:
    """How many whole frames of this size go through one forward (within the engine's memory budget, as
    its tiles are); 0 when a frame needs tiling."""
    longest = max(height, width)
    free = None
    if engine.tile == "auto":
        free = memory_budget(engine.device, engine.max_memory)
        if auto_tile(free, engine.model.bytes_per_pixel) < longest:
            return 0
    elif engine.tile and engine.tile < longest:
        return 0
    if engine.batch != "auto":
        return int(engine.batch)
    free = memory_budget(engine.device, engine.max_memory) if free is None else free
    return auto_batch(free, engine.model.bytes_per_pixel, longest)


def upscale_frame_stream(engine: Engine, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each HxWxC frame (uint8, uint16 or float in [0, 1]) upscaled, in order, as the same layout and dtype.

    Reads ahead only as many frames as one forward takes, so a long video never sits in memory."""
    group: list[np.ndarray] = []
    count: int | None = None
    for frame in frames:
        if group and (frame.shape != group[0].shape or frame.dtype != group[0].dtype):
            yield from _upscale_group(engine, group, count or 0)
            group, count = [], None
        if count is None:  # grey and transparent frames take the engine's own path for those
            rgb = frame.ndim == 3 and frame.shape[2] == 3
            count = frames_per_forward(engine, frame.shape[0], frame.shape[1]) if rgb else 0
        if count <= 1:
            yield engine.upscale_array(frame)
            continue
        group.append(frame)
        if len(group) == count:
            yield from _upscale_group(engine, group, count)
            group = []
    if group:
        yield from _upscale_group(engine, group, count or 0)


def _upscale_group(engine: Engine, group: list[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """Whole frames stacked into forwards of `count`, halving after an out-of-memory error."""
    done = 0
    while done < len(group):
        part = group[done : done + max(count, 1)]
        try:
            results = _forward_stack(engine, part)
        except Exception as exc:
            if not is_out_of_memory(exc) or count <= 1:
                raise
            count //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        done += len(part)
        yield from results


def _forward_stack(engine: Engine, frames: list[np.ndarray]) -> list[np.ndarray]:
    """One forward of whole RGB frames, stored as `mma.tiling` stores a finished band (clipped, rounded)."""
    stack = torch.stack([array_to_float(frame)[0] for frame in frames])
    with engine.running():
        result = engine.forward(stack).clamp(0.0, 1.0)
    dtype = frames[0].dtype
    if np.issubdtype(dtype, np.integer):
        result = result.mul_(np.iinfo(dtype).max).round_()
    out = result.permute(0, 2, 3, 1).numpy().astype(dtype)
    return [out[index] for index in range(len(frames))]
