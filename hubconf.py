"""torch.hub entry points: `torch.hub.load("<owner>/mma-sr", "mma_t", scale=4)` gives a ready MMA network.

Kept at the repository root for torch.hub and out of the wheel (pip users call `mma.load_model`). Pretrained
networks come from the weights bundled in the checkout, so nothing is downloaded beyond the repository itself.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# Modules torch.hub checks for before it calls an entry point: what building and loading a network imports.
dependencies = ["torch", "numpy", "numba", "PIL", "safetensors", "huggingface_hub", "tqdm"]


def mma_t(scale: int = 4, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """MMA-T (48 features, 12 blocks) at x2, x3 or x4, in eval mode on the CPU (or `device=`).

    pretrained=True loads the bundled weights; pretrained=False gives a freshly initialised network, whose
    architecture keyword arguments (e.g. num_block=2) override MMAConfig fields. `dtype=` casts either.
    """
    return _entry("mma-t", scale, pretrained, **kwargs)


def mma_b(scale: int = 4, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MMA-B (192 features, 24 blocks), as `mma_t`; no MMA-B weights are published, so pretrained=True raises
    the library's WeightsNotFoundError saying how to convert the authors' checkpoint instead."""
    return _entry("mma-b", scale, pretrained, **kwargs)


def _entry(
    variant: str, scale: int, pretrained: bool, *, device: Any = "cpu", dtype: Any = None, **overrides: Any
) -> nn.Module:
    # Imported here, not above: torch.hub checks `dependencies` after importing this file, so a missing
    # package is reported by name instead of as an ImportError from deep inside mma.
    import mma
    from mma.api import resolve_device, resolve_dtype
    from mma.errors import ConfigError

    target = resolve_device(device)
    if not pretrained:
        return mma.build_model(variant, scale, **overrides).to(target, resolve_dtype(dtype, target)).eval()
    if overrides:
        raise ConfigError(
            f"pretrained weights fix the architecture; {', '.join(sorted(overrides))} can only be "
            "changed with pretrained=False"
        )
    loaded = mma.load_model(variant, scale, device=target, dtype=dtype)
    # load_model caches its networks for `mma.upscale`: hand out a copy, so fine-tuning it changes nothing there.
    return copy.deepcopy(getattr(loaded, "network", loaded))
