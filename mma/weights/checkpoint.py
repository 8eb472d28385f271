"""Weight files: reading safetensors and the authors' BasicSR `.pth`, writing self-describing safetensors, and
telling in one line how a state dict fails to fit a network.

Only tensors ever come out of a file: `.pth` files are read with `torch.load(weights_only=True)`, whose restricted
unpickler refuses any other Python object instead of running it, and safetensors cannot hold code at all.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from mma.errors import CheckpointError, ConfigError
from mma.fileio import atomic_write
from mma.model import MMA, MMAConfig, infer_config

FORMAT_VERSION = 1
FORMAT_NAME = "mma-sr"

# Keys this library writes itself; provenance may not overwrite them. "format": "pt" is the safetensors
# convention other tools (transformers, huggingface_hub) check, so it stays a plain string.
_RESERVED = frozenset({"format", "mma_format", "format_version", "variant", "scale", "config", "file_format"})

# BasicSR keeps the EMA weights (the ones its papers evaluate) under params_ema, the raw ones under params.
_BASICSR_KEYS = ("params_ema", "params")

StateDict = dict[str, torch.Tensor]

_SHOWN = 3  # names quoted per category in a mismatch message; the counts say the rest


def expected_shapes(config: MMAConfig) -> dict[str, torch.Tensor]:
    """The state dict `config`'s network has, as meta tensors: shapes only, no memory or init time spent."""
    with torch.device("meta"):
        return MMA(config).state_dict()


def describe(config: MMAConfig) -> str:
    """`mma-t x4 (num_feat=48, num_block=12)`: what a user needs to tell two checkpoints apart."""
    return f"{config.variant} x{config.scale} (num_feat={config.num_feat}, num_block={config.num_block})"


def check_fit(expected: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], target: str) -> None:
    """Raise one CheckpointError naming expected vs found when `state_dict` does not match `expected` shapes.

    `expected` maps names to tensors or shapes (a meta-device model's state dict works, so no memory is spent).
    """
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"{key}: expected {tuple(expected[key].shape)}, found {tuple(state_dict[key].shape)}"
        for key in expected
        if key in state_dict and tuple(expected[key].shape) != tuple(state_dict[key].shape)
    ]
    if not (missing or unexpected or wrong):
        return
    try:
        found = f"the file holds {describe(infer_config(state_dict))}"
    except ConfigError as exc:
        found = f"the file is not a recognisable MMA checkpoint ({exc})"
    parts = [_listing("missing", missing), _listing("unexpected", unexpected), _listing("wrong shape", wrong)]
    details = "; ".join(part for part in parts if part)
    raise CheckpointError(f"weights do not fit {target}: {found}; {details}")


def _listing(label: str, items: list[str]) -> str:
    """`missing 5: a, b, c, ... 2 more` (empty when there is nothing to say)."""
    if not items:
        return ""
    more = f", ... {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{label} {len(items)}: {', '.join(items[:_SHOWN])}{more}"


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[StateDict, dict[str, Any]]:
    """Tensors and metadata of a safetensors file or an authors' `.pth`, keys canonical (no `module.` prefix).

    Metadata of a file written by `save_safetensors` holds `variant`, `scale`, `config` (a dict),
    `format_version` and the provenance fields; a `.pth` gives `{"file_format": "pth", "state_key": ...}` (the
    BasicSR entry the weights came from, or None for a bare state dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'a directory, not a' if path.is_dir() else 'no such'} weights file")
    if path.suffix.lower() == ".safetensors" or _has_safetensors_header(path):
        return _load_safetensors(path)
    return _load_pth(path)


def _has_safetensors_header(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length followed by the JSON header's `{`."""
    with path.open("rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> tuple[StateDict, dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safe_open handle is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file (corrupt or truncated: {exc})") from None
    return _strip_prefix(tensors), decode_metadata(raw)


def _load_pth(path: Path) -> tuple[StateDict, dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The restricted unpickler stopped; its own reason (e.g. "unsupported GLOBAL posix.system") is the context.
        reason = str(exc.__context__ or "").strip().splitlines()
        raise CheckpointError(
            f"{path}: refused by the safe loader{f' ({reason[0]})' if reason else ''}: a .pth may hold only "
            "tensors, since any other pickled object could run code; this one holds something else or is damaged"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    state_key = next((key for key in _BASICSR_KEYS if isinstance(obj.get(key), Mapping)), None)
    state = obj[state_key] if state_key else obj
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: not a state dict: {len(not_tensors)} entries are not tensors (e.g. {not_tensors[0]!r}); "
            f"expected BasicSR's {' or '.join(_BASICSR_KEYS)} or a plain state dict"
        )
    return _strip_prefix(dict(state)), {"file_format": "pth", "state_key": state_key}


def _strip_prefix(state: StateDict) -> StateDict:
    """Drop the `module.` prefix DistributedDataParallel adds, so keys match the bare network."""
    prefix = "module."
    return {key.removeprefix(prefix): value for key, value in state.items()}


def encode_metadata(config: MMAConfig, provenance: Mapping[str, Any]) -> dict[str, str]:
    """Safetensors metadata (str -> str): our fields and the provenance as JSON strings."""
    clash = sorted(_RESERVED & set(provenance))
    if clash:
        raise ConfigError(f"provenance field(s) {', '.join(clash)} are reserved for the file format")
    fields: dict[str, Any] = {
        "mma_format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "variant": config.variant,
        "scale": config.scale,
        "config": config.to_dict(),
        **provenance,
    }
    try:
        encoded = {key: json.dumps(value) for key, value in fields.items()}
    except TypeError as exc:
        raise ConfigError(f"provenance must be JSON-serialisable: {exc}") from None
    return {"format": "pt", **encoded}


def decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of `encode_metadata`; foreign files' plain strings are kept as they are."""
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


def save_safetensors(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    config: MMAConfig | None = None,
    **provenance: Any,
) -> Path:
    """Write weights with their config and provenance; atomic, so a crash never leaves a half-written file.

    `config` defaults to the model's own (`model.config`) or, for a bare state dict, to what its shapes say.
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        config = config or getattr(model_or_state_dict, "config", None)
    else:
        state = dict(model_or_state_dict)
    if config is None:
        config = infer_config(state)
    check_fit(expected_shapes(config), state, describe(config))  # a file must never misdescribe its tensors
    metadata = encode_metadata(config, provenance)
    # Clone so no two tensors share storage (safetensors refuses shared tensors) and nothing stays on the GPU.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    path = Path(path)
    # Serialise in memory and write ourselves: safetensors' own save_file creates files readable by the owner only.
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path
