"""The training state file: everything needed to continue a run bit for bit, written atomically.

Why only tensors and plain Python values inside: the file is read back with
`torch.load(weights_only=True)`, which refuses arbitrary objects, so random-generator states are stored
as tensors and tuples rather than as the objects numpy and `random` hand out.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mma.errors import CheckpointError
from mma.fileio import atomic_write

STATE_FORMAT = "mma-train-state"
STATE_VERSION = 1
STATE_FILE = "state.ckpt"


def capture_rng() -> dict[str, Any]:
    """The global generators of torch (CPU and CUDA), numpy and `random` as weights_only-safe values."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus format tag and RNG states) to `path` via a temporary file and a rename."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "rng": capture_rng(), **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_state(path: Path) -> dict[str, Any]:
    """Read a file written by `save_state` (tensors land on the CPU)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training state")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: holds Python objects other than tensors and plain values"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a training state written by `mma train`")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{path}: training state version {state.get('version')} is not supported "
            f"(this version reads {STATE_VERSION})"
        )
    return state
