"""The continuation file: what continuing a run needs when its full training state is not kept.

Why it exists: `state.ckpt` (network, EMA, both Adam moments, RNG states) is four copies of the weights in
float32; committed after every training day it made a repository's history grow by tens of megabytes a
day. A run continued from its raw and EMA weights alone, with a fresh optimiser and a short warm-up of the
learning rate, measured as good as one continued from the full state (weights/TRAINING.md, "Continuing
without the training state"). So this file holds those two sets of weights in float16 (a quarter of the
state's size), the iteration and the configuration: the smallest form that measured well.

Float16 rather than bfloat16: the same two bytes, three more bits of mantissa, and trained weights sit far
inside float16's range (this project's largest is below 10; float16 reaches 65504).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from mma.errors import CheckpointError
from mma.fileio import atomic_write
from mma.train.state import STATE_FILE, load_state

CONTINUATION_FILE = "continue.safetensors"
CONTINUATION_FORMAT = "mma-train-continuation"
STORED_DTYPE = torch.float16
_RAW, _EMA = "raw/", "ema/"


def save_continuation(
    path: Path,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    iteration: int,
    config: dict[str, Any],
) -> Path:
    """Write the raw (`model`) and averaged (`ema`) weights in float16 with the iteration and configuration."""
    tensors = {
        **{_RAW + name: _stored(value) for name, value in model.items()},
        **{_EMA + name: _stored(value) for name, value in ema.items()},
    }
    metadata = {
        "format": CONTINUATION_FORMAT,
        "iteration": str(int(iteration)),
        "config": json.dumps(config, sort_keys=True),
    }
    data = save(tensors, metadata=metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _stored(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().to("cpu")
    if value.is_floating_point():
        value = value.to(STORED_DTYPE)
    return value.contiguous().clone()


def load_continuation(path: Path) -> dict[str, Any]:
    """{"model", "ema": float32 state dicts, "iteration": int, "config": dict} from a continuation file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such continuation file")
    try:
        data = path.read_bytes()
        tensors = load(data)
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {})
        iteration, config = int(metadata["iteration"]), json.loads(metadata["config"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable continuation file ({exc})") from None
    if metadata.get("format") != CONTINUATION_FORMAT:
        raise CheckpointError(f"{path}: not a continuation file written by `mma train`")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {
            name[len(prefix) :]: value.float() if value.is_floating_point() else value
            for name, value in tensors.items()
            if name.startswith(prefix)
        }

    return {"model": part(_RAW), "ema": part(_EMA), "iteration": iteration, "config": config}


def continuation_from_state(run: str | Path) -> Path:
    """Write `run`'s continuation file from its full training state (for runs saved before the file existed)."""
    run = Path(run)
    state = load_state(run / STATE_FILE)
    return save_continuation(
        run / CONTINUATION_FILE, state["model"], state["ema"], int(state["iteration"]), state["config"]
    )
