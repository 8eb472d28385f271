"""The model cache behind `mma.load_model`: the same arguments give the same LoadedModel instance, and a
local file that changed since is read again.

Kept beside the loader rather than in the public face, so every caller that wants a shared, placed model
(the API, the CLI, integrations) gets the same cache with one rule for when it is stale.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from mma.weights import hub
from mma.weights.loaded import LoadedModel, check_scale_matches, load, local_path

CACHE_SIZE = 4  # placed models kept; each may hold a network's weights on a GPU


def load_cached(
    name: str | os.PathLike[str], scale: int | None, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    """`load(name, scale)` placed on `device`/`dtype`, shared between callers that ask alike; a local file
    or folder is keyed by its resolved path and its files' modification times and sizes."""
    path = local_path(name)
    stamp: tuple[Any, ...] = ()
    if path is not None:
        weights = path / hub.WEIGHTS_NAME if path.is_dir() else path
        parts = [p for p in (weights, path / hub.CONFIG_NAME) if p.is_file()]
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in parts)
        name = str(path.resolve())
    return _load_placed(os.fspath(name), stamp, scale, str(device), dtype)


def clear() -> None:
    """Forget every cached model (their memory is freed once no caller holds them)."""
    _load_placed.cache_clear()


@functools.lru_cache(maxsize=CACHE_SIZE)
def _load_placed(
    name: str, stamp: tuple[Any, ...], scale: int | None, device: str, dtype: torch.dtype
) -> LoadedModel:
    loaded = load(name, scale).to(device, dtype)
    check_scale_matches(loaded, scale)
    return loaded
